"""The `vd` command line: one thin module per subcommand (parse options, call vd, print)."""
