"""Run recipes: what each command does, below the CLI and above the jobs. A command's options
become one request (a dataclass, or the job's own config), one call runs it, and the result
comes back as data for the CLI or the demo to render. Checks of the inputs before Spark starts
(`preflight`) and the option defaults read from the configs (`defaults`) live here too."""
