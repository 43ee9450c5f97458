"""Score a file with a registered model on Spark and write partitioned Parquet: a spark-submit job.

Here, on two local cores (the course's venv; ``PYSPARK_PYTHON`` tells Spark which Python runs the
workers)::

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master "local[2]" scripts/spark_batch_score.py \\
        --model-uri models:/credit-risk@champion --input applications.parquet --output predictions \\
        --partition-by purpose --tracking-uri sqlite:///.mlops_lab/mlflow.db

On a cluster only the master and the URIs change: ``--master spark://host:7077`` (or ``yarn``, or
``k8s://https://host:6443``), an input and output on shared storage (``hdfs://``, ``s3a://``), a
tracking server's ``http://`` URI; the executors need the same Python packages (mlflow,
scikit-learn), the driver also ``mlops_lab``. ``--master`` may also be given after the script (it
then overrides spark-submit's).

Input: a Parquet file or folder, or a CSV file with a header row. The input is checked against the
model's signature before any task runs; a missing model, missing or mistyped columns and an empty
input exit with status 2 and a one-line message, and write nothing. The output appears only when
every task succeeded (written to a hidden sibling folder, then renamed).
"""

from __future__ import annotations

import argparse
import sys


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Score a file with an MLflow model on Spark; write partitioned Parquet.")
    parser.add_argument("--model-uri", required=True, help="e.g. models:/credit-risk@champion")
    parser.add_argument("--input", required=True, help="a .parquet file or folder, or a .csv file with a header")
    parser.add_argument("--output", required=True, help="the Parquet folder to write (replaced if it exists)")
    parser.add_argument("--partition-by", action="append", default=[], help="a column to partition by (repeatable)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--master", default=None, help="overrides spark-submit's --master (e.g. local[2])")
    parser.add_argument("--prediction-column", default="prediction")
    parser.add_argument("--partitions", type=int, default=None, help="repartition the input before scoring")
    return parser.parse_args(argv)


def read(session, path: str):
    """The input as a Spark DataFrame: CSV by its suffix (header row, types inferred), else Parquet."""
    if path.lower().endswith(".csv"):
        return session.read.csv(path, header=True, inferSchema=True)
    return session.read.parquet(path)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import mlflow
    from pyspark.errors import AnalysisException
    from pyspark.sql import SparkSession

    from mlops_lab import config, spark

    config.quiet_logs()
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    try:
        spark.input_schema(args.model_uri)  # an unknown model fails here, before Spark starts
    except spark.SparkScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    builder = SparkSession.builder.appName("spark-batch-score")
    if args.master:
        builder = builder.master(args.master)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        try:
            data = read(session, args.input)
        except AnalysisException as exc:
            print(f"error: cannot read the input {args.input}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
            return 2
        scored = spark.score(session, args.model_uri, data, prediction=args.prediction_column,
                             partitions=args.partitions)  # the input checked first: no scoring task before
        written = spark.write_predictions(scored, args.output, partition_by=args.partition_by or None)
        rows = session.read.parquet(written).count()  # what was written, read back
        by = f", partitioned by {', '.join(args.partition_by)}" if args.partition_by else ""
        print(f"scored {rows} rows with {args.model_uri} on {session.sparkContext.master} -> {args.output}{by}")
        return 0
    except spark.SparkScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        session.stop()


if __name__ == "__main__":
    raise SystemExit(main())
