"""Challenge bundles: a challenge, its test sets and phases as one reviewed, versioned YAML file.

`schema` says what a bundle may hold, `source` reads one (errors name the line and the field), `plan` compares
it with a server and lists the steps that make the server match, and exports a running challenge as a bundle.
`apply` runs the plan on the server in one transaction (`POST /api/v1/admin/bundles`: all or nothing). The CLI
(`midog-eval admin apply|export`, app.cli.bundle) sends the bundle to that endpoint, so a
bundle works against any server the organiser can reach. docs/bundles.md describes the format.
"""
