"""The CLI's subcommands, one module each; ``cli.py`` builds the parser and calls them."""
