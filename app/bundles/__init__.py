"""Challenge bundles: a challenge, its test sets and phases as one reviewed, versioned YAML file.

`schema` says what a bundle may hold, `source` reads one (errors name the line and the field), `plan` compares
it with a server and lists the steps that make the server match, and exports a running challenge as a bundle.
The CLI (`midog-eval admin apply|export`, app.cli.bundle) applies the steps through the organiser API, so a
bundle works against any server the organiser can reach. docs/bundles.md describes the format.
"""
