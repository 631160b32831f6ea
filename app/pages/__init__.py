"""Server-rendered public pages (Jinja2 templates in app/templates, CSS and JS in app/static).

Pages read through the same services as the JSON API, so they can never show more than the API would.
"""
