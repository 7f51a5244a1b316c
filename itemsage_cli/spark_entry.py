"""The file spark-submit runs for every ItemSage job: `spark_entry.py JOB [OPTIONS]` is
`itemsage JOB [OPTIONS]` (validate, embed, build-index, neighbours, prepare-training, train), so
a job takes the same options, defaults and errors under spark-submit as from the command line
(spark-submit.sh)."""

from itemsage_cli.main import main

if __name__ == "__main__":
    main()
