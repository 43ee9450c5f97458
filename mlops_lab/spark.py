"""Batch inference on Apache Spark: a local session that cleans up after itself, the champion as a UDF.

    with spark.session("local[2]") as session:
        scored = spark.score(session, "models:/credit-risk@champion", frame)   # a Spark DataFrame
        spark.write_predictions(scored, "predictions", partition_by=["purpose"])

The scoring itself is MLflow's: :func:`champion_udf` is ``mlflow.pyfunc.spark_udf`` with
``env_manager="local"`` (the executors use this Python and its packages; nothing is built or
downloaded). What is written by hand here is what MLflow and pyspark leave to the caller, and what
a batch job needs to be safe:

- **Java first.** Spark 4 runs on Java 17 or newer; without it pyspark fails with a long Java or
  shell error. :func:`check_java` finds ``java`` the way ``spark-submit`` does (``$JAVA_HOME/bin/java``,
  then ``PATH``) and says what to install.
- **A session that leaves nothing behind.** :func:`session` sets ``PYSPARK_PYTHON`` to this
  interpreter (else the Python workers start another Python, without our packages), keeps Spark's
  scratch folders and logs inside the workspace, quiets its console at the source (a log4j2 file,
  no progress bars, no UI), and on exit stops the session **and** the JVM that pyspark launched
  (pyspark keeps it running until the Python process ends) and checks no ``java`` child is left.
- **Input checked before any work.** :func:`score` compares the input with the model's signature:
  a missing column, a text column where a number is expected, or an empty input is refused with a
  message naming the problem, before a single task runs (MLflow would fail inside an executor, with
  a Java stack trace, after the job started).
- **Output written atomically.** :func:`write_predictions` writes partitioned Parquet into a hidden
  sibling folder and renames it into place only when every task succeeded (through Hadoop's file
  system API, so the same code works on HDFS or S3): a job that fails half-way leaves nothing.
- **Parity and throughput.** :func:`parity` compares Spark's predictions with pandas', row by row;
  :func:`throughput` measures pandas, the scoring server and Spark on 1 and 2 cores side by side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_lab.config import SEED

JAVA_MIN = 17
JAVA_HELP = ("Spark 4 needs Java 17 or newer: install one (e.g. `apt install openjdk-17-jre-headless` or "
             "`brew install openjdk@17`) and put java on PATH or set JAVA_HOME")
ROW_ID = "row_id"
PREDICTION = "prediction"
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"

LOG4J2 = """\
# Written by mlops_lab.spark: Spark's own messages only when something is wrong.
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
"""


class SparkSetupError(RuntimeError):
    """Spark cannot start here: no Java, a Java that is too old, or a session already running."""


class SparkScoringError(ValueError):
    """A batch cannot be scored: unknown model, input that does not match its signature, empty input,
    or a job that failed (nothing is written then)."""


# -- Java ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JavaVersion:
    """The ``java`` Spark will run: its path, major version (8, 11, 17, 21, ...) and version line."""

    path: str
    major: int
    text: str


def _java_path() -> str:
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if not candidate.is_file():
            raise SparkSetupError(f"JAVA_HOME is set to {home}, which has no bin/java. {JAVA_HELP}.")
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise SparkSetupError(f"No java found (JAVA_HOME is not set and java is not on PATH). {JAVA_HELP}.")
    return found


def java_version() -> JavaVersion:
    """The Java that Spark would use: ``$JAVA_HOME/bin/java`` if JAVA_HOME is set, else ``java`` on PATH.

    Runs ``java -version`` and parses its first line (``openjdk version "17.0.15"`` -> 17;
    ``java version "1.8.0_292"`` -> 8). Raises :class:`SparkSetupError` when there is no Java or its
    version cannot be read.
    """
    path = _java_path()
    try:
        done = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SparkSetupError(f"{path} -version failed ({exc}). {JAVA_HELP}.") from exc
    text = (done.stderr or done.stdout).strip()
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if done.returncode != 0 or match is None:
        raise SparkSetupError(f"Cannot read the version of {path} (it printed {text[:120]!r}). {JAVA_HELP}.")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # Java 8 and older call themselves 1.8, 1.7, ...
        major = int(match.group(2))
    return JavaVersion(path, major, text.splitlines()[0])


def check_java(minimum: int = JAVA_MIN) -> JavaVersion:
    """:func:`java_version`, refused with :class:`SparkSetupError` when it is older than ``minimum``."""
    found = java_version()
    if found.major < minimum:
        raise SparkSetupError(f"Found Java {found.major} ({found.text}) at {found.path}. {JAVA_HELP}.")
    return found


# -- the session --------------------------------------------------------------------------------

def java_children() -> list:
    """Live ``java`` processes descended from this process (the JVM pyspark launched, if any)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (proc.name() == "java" or
                                                          Path((proc.cmdline() or [""])[0]).name == "java"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _stop_jvm(timeout: float = 30.0) -> None:
    """Shut down the py4j gateway and the JVM pyspark started, and make sure no java child is left."""
    import psutil
    from pyspark import SparkContext

    active = SparkContext._active_spark_context  # e.g. a handle that never started stops one that did
    if active is not None:
        with contextlib.suppress(Exception):
            active.stop()  # clears pyspark's record of it; without this no session could start again
        SparkContext._active_spark_context = None
    gateway = SparkContext._gateway
    SparkContext._gateway = None
    SparkContext._jvm = None
    if gateway is not None:
        proc = getattr(gateway, "proc", None)
        with contextlib.suppress(Exception):
            gateway.shutdown()
        if proc is not None:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()  # the JVM exits when its stdin closes
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    left = java_children()
    for child in left:  # only our own descendants
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(left, timeout=10)


def stop_all() -> None:
    """Stop whatever Spark session and JVM this process runs, whichever handle started them."""
    _stop_jvm()


class LocalSpark:
    """A SparkSession to start and stop: ``with spark.session() as s:`` or ``s = ...start()`` / ``.stop()``."""

    def __init__(self, master: str, app_name: str, conf: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.master = master
        self.app_name = app_name
        self.conf = conf
        self.spark = None

    def start(self):
        """Check Java, launch the JVM (its console output goes to ``log_path``), build the session and
        return it (a ``pyspark.sql.SparkSession``)."""
        from pyspark import SparkConf, SparkContext
        from pyspark.java_gateway import launch_gateway
        from pyspark.sql import SparkSession

        check_java()
        if SparkContext._active_spark_context is not None:
            raise SparkSetupError("A Spark session is already running in this process: stop it first with the "
                                  "handle that started it (`.stop()`), or `spark.stop_all()` if that handle is lost "
                                  "(one SparkContext per process; its master cannot change).")
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        conf = SparkConf(loadDefaults=False).setMaster(self.master).setAppName(self.app_name)
        for key, value in self.conf.items():
            conf.set(key, value)
        try:
            if SparkContext._gateway is None:  # our own launch: the JVM's console goes to the log file
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "ab") as log:
                    SparkContext._gateway = launch_gateway(conf, popen_kwargs={"stdout": log, "stderr": log})
                SparkContext._jvm = SparkContext._gateway.jvm
            self.spark = SparkSession.builder.config(conf=conf).getOrCreate()
        except Exception as exc:
            _stop_jvm()
            tail = self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""
            raise SparkSetupError(f"Spark did not start on {self.master}: {_short(exc)}\n"
                                  f"Last lines of {self.log_path.name}:\n{tail}") from exc
        self.spark.sparkContext.setLogLevel("ERROR")
        return self.spark

    def stop(self) -> None:
        """Stop the session and the JVM behind it; no java child of this process is left."""
        if self.spark is not None:
            with contextlib.suppress(Exception):
                self.spark.stop()
            self.spark = None
        _stop_jvm()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def session(master: str = "local[2]", app_name: str = "mlops-lab", *, arrow_batch_size: int | None = None,
            shuffle_partitions: int | None = None, conf: dict[str, Any] | None = None) -> LocalSpark:
    """A Spark session on ``master`` (``local[2]``: two cores of this machine), as a context manager.

    Java is checked first (:func:`check_java`). ``PYSPARK_PYTHON`` is set to this interpreter so
    the Python workers have our packages. Spark's scratch space, warehouse and log configuration
    live in ``<workspace>/spark``; the console shows errors only (no progress bars, no web UI); the
    driver binds to 127.0.0.1. ``arrow_batch_size`` sets ``spark.sql.execution.arrow.maxRecordsPerBatch``
    (rows per Arrow batch handed to the model), ``shuffle_partitions`` ``spark.sql.shuffle.partitions``;
    ``conf`` adds any other setting. On exit the session and its JVM are stopped.
    """
    from mlops_lab import config

    folder = config.workspace() / "spark"
    (folder / "local").mkdir(parents=True, exist_ok=True)
    log4j = folder / "log4j2.properties"
    log4j.write_text(LOG4J2)
    settings = {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(folder / "local"),
        "spark.sql.warehouse.dir": str(folder / "warehouse"),
        # quoted: Spark splits these options on spaces, and a workspace path may hold one
        "spark.driver.extraJavaOptions": f'"-Dlog4j2.configurationFile={log4j.as_uri()}" "-Djava.io.tmpdir={folder / "local"}"',
        "spark.executor.extraJavaOptions": f'"-Dlog4j2.configurationFile={log4j.as_uri()}"',
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
    }
    if arrow_batch_size is not None:
        settings[ARROW_BATCH] = str(int(arrow_batch_size))
    if shuffle_partitions is not None:
        settings["spark.sql.shuffle.partitions"] = str(int(shuffle_partitions))
    settings.update({k: str(v) for k, v in (conf or {}).items()})
    return LocalSpark(master, app_name, settings, folder / "logs" / "spark.log")


# -- the model ----------------------------------------------------------------------------------

def _model_info(model_uri: str):
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlops_lab import registry

    alias = re.fullmatch(r"models:/([^/@]+)@(.+)", model_uri)
    if alias:
        try:
            registry.version_for(*alias.groups())
        except registry.RegistryError as exc:
            raise SparkScoringError(f"Cannot score with {model_uri}: {exc}") from None
    try:
        return mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise SparkScoringError(f"Cannot score with {model_uri}: no such model ({first})") from None


def input_schema(model_uri: str) -> dict[str, str]:
    """Column name -> MLflow type (``long``, ``double``, ``string``, ...) of the model's input signature."""
    signature = _model_info(model_uri).signature
    if signature is None or signature.inputs is None:
        raise SparkScoringError(f"{model_uri} has no input signature: the columns to score cannot be known. "
                                "Log it with a signature (training.log_sklearn_model does).")
    return {spec.name: str(spec.type).split(".")[-1].lower() for spec in signature.inputs.inputs}


def champion_udf(spark, model_uri: str, result_type: str | None = None):
    """The model at ``model_uri`` as a Spark UDF: ``mlflow.pyfunc.spark_udf(..., env_manager="local")``.

    ``env_manager="local"`` means the executors run the model in this Python environment (nothing
    is built or downloaded), which gives exactly scikit-learn's predictions. ``result_type`` is the
    Spark type of the prediction (default: inferred from the model's output signature). An unknown
    model or alias raises :class:`SparkScoringError` naming the URI and what the registry holds.
    """
    import mlflow

    info = _model_info(model_uri)
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)  # its warning recommends conda: local is this lesson's choice
    try:
        return mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type or _result_type(info),
                                       env_manager="local")
    finally:
        pyfunc_log.setLevel(level)


def _result_type(info) -> str | None:
    """One number per row for a scikit-learn model: its output signature is a 1-d tensor (``(-1,)``),
    which MLflow would turn into an array column; ``long`` or ``double`` instead. None: MLflow infers."""
    outputs = info.signature.outputs if info.signature is not None else None
    specs = getattr(outputs, "inputs", None) or []
    if len(specs) == 1 and getattr(specs[0], "shape", None) == (-1,):
        kind = np.dtype(specs[0].type).kind
        return {"i": "long", "u": "long", "f": "double", "b": "boolean"}.get(kind)
    return None


# What MLflow's schema enforcement converts safely (``_enforce_mlflow_datatype``: a widening cast
# only; a 64-bit integer is not safe as a double, so a bigint column for a double input is refused)
_SMALL = {"ByteType", "ShortType"}
_ACCEPTS = {"long": _SMALL | {"IntegerType", "LongType"}, "integer": _SMALL | {"IntegerType"},
            "double": _SMALL | {"IntegerType", "FloatType", "DoubleType"}, "float": _SMALL | {"FloatType"},
            "string": {"StringType", "VarcharType", "CharType"}, "boolean": {"BooleanType"},
            "binary": {"BinaryType"}, "datetime": {"TimestampType", "TimestampNTZType", "DateType"}}
_SPARK_NAMES = {"ByteType": "tinyint", "ShortType": "smallint", "IntegerType": "int", "LongType": "bigint",
                "FloatType": "float", "DoubleType": "double", "StringType": "string", "BooleanType": "boolean"}


def _as_spark(spark, data):
    """A Spark DataFrame from ``data`` (pandas categories become strings, as over the wire)."""
    if isinstance(data, pd.DataFrame):
        if data.empty:
            raise SparkScoringError("The input has no rows: nothing to score (no output is written).")
        from mlops_lab import training

        return spark.createDataFrame(training.model_input(data))
    return data


def check_input(sdf, schema: dict[str, str], model_uri: str = "the model") -> None:
    """Refuse a Spark DataFrame that lacks a column of ``schema`` (see :func:`input_schema`), has no
    rows, or holds a column of the wrong type; each with :class:`SparkScoringError` naming it."""
    missing = [c for c in schema if c not in sdf.columns]
    if missing:
        raise SparkScoringError(f"The input lacks the column(s) {missing} that {model_uri} needs; "
                                f"it has {list(sdf.columns)}.")
    if sdf.isEmpty():
        raise SparkScoringError("The input has no rows: nothing to score (no output is written).")
    types = {field.name: type(field.dataType).__name__ for field in sdf.schema.fields}
    wrong = [(c, expected, types[c]) for c, expected in schema.items()
             if expected in _ACCEPTS and types[c] not in _ACCEPTS[expected]]
    if wrong:
        described = "; ".join(f"column {c!r} should be {e} but is {_SPARK_NAMES.get(t, t)}" for c, e, t in wrong)
        raise SparkScoringError(f"The input does not match the signature of {model_uri}: {described}. "
                                "Cast it (e.g. `col(name).cast('bigint')`) or fix the file that produced it.")


def score(spark, model_uri: str, data, *, prediction: str = PREDICTION, partitions: int | None = None,
          result_type: str | None = None):
    """``data`` (a pandas or Spark DataFrame) with a ``prediction`` column from ``model_uri``, on Spark.

    The input is checked against the model's signature first: missing columns, mistyped columns
    (e.g. a string where the model expects a number) and an empty input raise
    :class:`SparkScoringError` naming the problem, before any task runs. The model's columns are
    passed as a ``struct`` so MLflow gets them by name; other columns (a row id, a month to
    partition by) are kept. ``partitions`` repartitions the input first. The result is lazy: it is
    computed when written (:func:`write_predictions`) or collected.
    """
    from pyspark.sql import functions as F

    schema = input_schema(model_uri)
    sdf = _as_spark(spark, data)
    check_input(sdf, schema, model_uri)
    if partitions is not None:
        sdf = sdf.repartition(int(partitions))
    udf = champion_udf(spark, model_uri, result_type=result_type)
    return sdf.withColumn(prediction, udf(F.struct(*[F.col(c) for c in schema])))


def _short(exc: BaseException) -> str:
    """The last Python or Java error line of a Spark failure, not its stack trace. MLflow wraps its
    reason after a dump of the batch (``Failed to enforce schema of data '...' ... Error: <reason>``):
    then the reason, under the exception's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    if not errors:
        return (lines[0] if lines else type(exc).__name__)[:400]
    line = lines[errors[-1]]
    reasons = [later for later in lines[errors[-1]:] if "Error: " in later]
    if reasons and reasons[-1] is not line or (reasons and len(line) > 300):
        name = re.match(r"^([\w.]+?(?:Error|Exception))\b", line).group(1).split(".")[-1]
        line = f"{name}: {reasons[-1].rsplit('Error: ', 1)[-1]}"
    return line[:400]


def write_predictions(sdf, path: str | Path, partition_by: Sequence[str] | None = None, *,
                      overwrite: bool = True) -> str:
    """Write ``sdf`` as (partitioned) Parquet at ``path``, atomically; returns the path written.

    Spark writes into a hidden sibling folder (``.<name>.tmp-<id>``) and the folder is renamed to
    ``path`` only when every task succeeded. A job that fails (a row the model cannot score, a lost
    executor, an interrupt) leaves nothing new at ``path`` (nor a stray temporary folder) and raises
    :class:`SparkScoringError` with the error's last line. An existing ``path`` is replaced
    (``overwrite=False`` refuses instead). Uses Hadoop's file system API, so ``path`` may be a
    local folder or ``hdfs://...`` (a path without a scheme is resolved by the default file system,
    as ``spark.read`` resolves it). The renames are atomic on a local disk and on HDFS; on S3 a
    folder rename is a copy, so write each run to a new dated prefix there instead.
    """
    spark = sdf.sparkSession
    jvm = spark.sparkContext._jvm
    given = jvm.org.apache.hadoop.fs.Path(str(path))
    fs = given.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    final = fs.makeQualified(given)  # relative paths as the cluster's default file system reads them
    target = str(Path(final.toUri().getPath())) if final.toUri().getScheme() == "file" else final.toString()
    if fs.exists(final) and not overwrite:
        raise SparkScoringError(f"{path} exists already (pass overwrite=True to replace it).")
    parent, name = final.getParent(), final.getName()
    tmp = jvm.org.apache.hadoop.fs.Path(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    writer = sdf.write.mode("error")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.parquet(tmp.toString())
    except BaseException as exc:  # an interrupt too: no temporary folder is left behind
        fs.delete(tmp, True)
        if not isinstance(exc, Exception):
            raise
        raise SparkScoringError(f"Scoring failed; nothing was written to {final.getName()!r}: {_short(exc)}") from exc
    old = jvm.org.apache.hadoop.fs.Path(parent, f".{name}.old-{uuid.uuid4().hex[:8]}")
    had_old = fs.exists(final)
    if had_old and not fs.rename(final, old):  # else the next rename would move tmp *into* final
        fs.delete(tmp, True)
        raise SparkScoringError(f"Could not move the previous output at {path} aside; it is unchanged.")
    if not fs.rename(tmp, final):
        if had_old:
            fs.rename(old, final)
        fs.delete(tmp, True)
        raise SparkScoringError(f"Could not move the finished output into {path}; nothing changed there.")
    if had_old:
        fs.delete(old, True)
    return target


# -- parity, data -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parity:
    """Spark's predictions against pandas', matched by row id."""

    rows: int
    missing: int  # row ids present on one side only
    max_abs_diff: float
    tolerance: float

    @property
    def equal(self) -> bool:
        """Every row on both sides, and no prediction further apart than ``tolerance``."""
        return self.missing == 0 and self.rows > 0 and self.max_abs_diff <= self.tolerance

    @property
    def identical(self) -> bool:
        return self.equal and self.max_abs_diff == 0.0


def _as_pandas(predictions, on: str, prediction: str) -> pd.DataFrame:
    if isinstance(predictions, pd.Series):
        return pd.DataFrame({on: predictions.index, prediction: predictions.to_numpy()})
    if not isinstance(predictions, pd.DataFrame):  # a Spark DataFrame
        predictions = predictions.select(on, prediction).toPandas()
    return predictions[[on, prediction]]


def parity(spark_predictions, pandas_predictions, *, on: str = ROW_ID, prediction: str = PREDICTION,
           tolerance: float = 1e-9) -> Parity:
    """Compare predictions row by row, joined on ``on``: the largest absolute difference and a verdict.

    Each side is a Spark DataFrame, a pandas DataFrame (read back from Parquet, say) with columns
    ``on`` and ``prediction``, or a Series indexed by row id. A row id that appears twice on a side
    is refused (a join would pair every copy with every other); a prediction that is missing on
    one side only counts as an infinite difference, so it can never pass.
    """
    left = _as_pandas(spark_predictions, on, prediction)
    right = _as_pandas(pandas_predictions, on, prediction)
    for side, frame in (("Spark", left), ("pandas", right)):
        repeated = frame[on][frame[on].duplicated()].unique()
        if len(repeated):
            raise SparkScoringError(f"The {side} predictions repeat {len(repeated)} row id(s) (first: "
                                    f"{list(repeated[:3])}): parity needs one prediction per row id.")
    both = left.merge(right, on=on, how="outer", suffixes=("_spark", "_pandas"), indicator=True)
    matched = both[both["_merge"] == "both"]
    a, b = matched[f"{prediction}_spark"].astype(float), matched[f"{prediction}_pandas"].astype(float)
    diff = (a - b).abs().where(a.isna() == b.isna(), np.inf).fillna(0.0)  # NaN on both sides: the same
    return Parity(rows=len(matched), missing=int((both["_merge"] != "both").sum()),
                  max_abs_diff=float(diff.max()) if len(diff) else float("nan"), tolerance=tolerance)


def pandas_predictions(model_uri: str, frame: pd.DataFrame, *, on: str = ROW_ID,
                       prediction: str = PREDICTION, model=None) -> pd.DataFrame:
    """The reference: ``mlflow.pyfunc.load_model(model_uri).predict`` on ``frame``, as ``[on, prediction]``."""
    import mlflow

    from mlops_lab import training

    model = model or mlflow.pyfunc.load_model(model_uri)
    columns = list(input_schema(model_uri))
    predicted = np.asarray(model.predict(training.model_input(frame[columns]))).ravel()
    return pd.DataFrame({on: frame[on].to_numpy(), prediction: predicted})


def enlarge(frame: pd.DataFrame, rows: int, seed: int = SEED, *, id_column: str = ROW_ID) -> pd.DataFrame:
    """``rows`` rows drawn from ``frame`` with replacement (seeded), with a ``row_id`` column 0..rows-1.

    German Credit has 1,000 applications: too few for partitions to matter. Resampling keeps each
    column's distribution and types (categories stay categories) and is the same for the same seed.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    picked = np.random.default_rng(seed).integers(0, len(frame), rows)
    out = frame.iloc[picked].reset_index(drop=True)
    out.insert(0, id_column, np.arange(rows, dtype="int64"))
    return out


def with_row_id(frame: pd.DataFrame, id_column: str = ROW_ID) -> pd.DataFrame:
    """``frame`` with a ``row_id`` column 0..n-1 (to join predictions back), categories as strings."""
    from mlops_lab import training

    out = training.model_input(frame).reset_index(drop=True)
    out.insert(0, id_column, np.arange(len(out), dtype="int64"))
    return out


def read_predictions(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Partitioned Parquet written by :func:`write_predictions`, read back with pandas (sorted by row id
    when there is one); partition columns come back as columns."""
    from mlops_lab import training

    frame = training.model_input(pd.read_parquet(path, columns=list(columns) if columns else None))
    if ROW_ID in frame.columns:
        frame = frame.sort_values(ROW_ID, kind="stable").reset_index(drop=True)
    return frame


def partitions_written(path: str | Path) -> pd.DataFrame:
    """One row per partition folder of a Parquet output: the folder (relative; Spark escapes ``/`` in
    a value as ``%2F``), the value it holds, and its number of data files."""
    from urllib.parse import unquote

    root = Path(path)
    rows = [{"partition": str(d.relative_to(root)), "value": unquote(d.name.split("=", 1)[1]),
             "files": len(list(d.glob("*.parquet")))}
            for d in sorted(root.rglob("*")) if d.is_dir() and "=" in d.name]
    return pd.DataFrame(rows, columns=["partition", "value", "files"])


# -- throughput ---------------------------------------------------------------------------------

def _best(run, repeats: int) -> float:
    """The shortest wall-clock time of ``repeats`` calls of ``run`` (after none: warm-up is the caller's)."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def pandas_rate(model_uri: str, frame: pd.DataFrame, *, repeats: int = 2) -> float:
    """Rows per second of ``pyfunc.load_model(model_uri).predict`` on ``frame`` (one call, in memory;
    loading excluded)."""
    import mlflow

    from mlops_lab import training

    model = mlflow.pyfunc.load_model(model_uri)
    X = training.model_input(frame[list(input_schema(model_uri))])
    model.predict(X.head(10))
    return len(X) / _best(lambda: model.predict(X), repeats)


def http_rate(model_uri: str, frames: dict[int, pd.DataFrame], *, chunk_size: int = 1000,
              repeats: int = 2) -> dict[int, float]:
    """Rows per second through ``mlflow models serve`` (one server, ``chunk_size`` rows per request),
    for each frame; start-up excluded."""
    from mlops_lab import serving, training

    columns = list(input_schema(model_uri))
    rates = {}
    with serving.model_server(model_uri) as server, server.client(timeout=120) as client:
        for size, frame in frames.items():
            X = training.model_input(frame[columns])
            client.predict(X.head(10))
            rates[size] = len(X) / _best(lambda: serving.score_over_http(client, X, chunk_size=chunk_size), repeats)
    return rates


MEASURED: list[float] = []
"""Every rate :func:`spark_rate` measured in this process (lab 15's check reads the timings back)."""


def spark_rate(spark, model_uri: str, source, *, partitions: int | None = None, repeats: int = 2,
               arrow_batch_size: int | None = None) -> float:
    """Rows per second of a Spark job that reads ``source`` (a Spark DataFrame, e.g. ``spark.read.parquet``),
    scores it and computes every prediction (Spark's ``noop`` sink: no output cost).

    ``partitions`` repartitions the input; ``arrow_batch_size`` sets rows per Arrow batch for this
    measurement. One warm-up job first (the Python workers load the model).
    """
    saved = spark.conf.get(ARROW_BATCH)
    if arrow_batch_size is not None:
        spark.conf.set(ARROW_BATCH, str(int(arrow_batch_size)))
    try:
        rows = source.count()
        scored = score(spark, model_uri, source, partitions=partitions)
        job = lambda: scored.write.format("noop").mode("overwrite").save()  # noqa: E731
        job()
        rate = rows / _best(job, repeats)
        MEASURED.append(rate)
        return rate
    finally:
        spark.conf.set(ARROW_BATCH, saved)  # for this measurement only


def throughput(model_uri: str, frame: pd.DataFrame, sizes: Sequence[int] = (2_000, 20_000), *,
               masters: Sequence[str] = ("local[1]", "local[2]"), http: bool = True, repeats: int = 2,
               chunk_size: int = 1000, seed: int = SEED) -> pd.DataFrame:
    """Rows per second of four ways to score the same rows, side by side, at each size in ``sizes``.

    ``frame`` is enlarged to each size (:func:`enlarge`) and written to Parquet in the workspace.
    Measured one after the other on this machine: pandas (``pyfunc.load_model(...).predict``, the
    baseline), the scoring server over HTTP (``chunk_size`` rows per request), and a Spark job on
    each of ``masters`` (read Parquet, score with the UDF, compute every prediction). Start-up
    (loading, the server, the session) is excluded; each figure is the best of ``repeats`` after a
    warm-up. Returns ``rows, method, rows_per_s, vs_pandas``. Needs no running session (it starts
    and stops its own).
    """
    from mlops_lab import config, training

    folder = config.workspace() / "spark" / "throughput"
    folder.mkdir(parents=True, exist_ok=True)
    frames = {size: enlarge(frame, size, seed) for size in sizes}
    files = {}
    for size, part in frames.items():
        files[size] = folder / f"input-{size}.parquet"
        training.model_input(part).to_parquet(files[size], index=False)
    rows = [{"rows": size, "method": "pandas (pyfunc)", "rows_per_s": pandas_rate(model_uri, part, repeats=repeats)}
            for size, part in frames.items()]
    if http:
        rows += [{"rows": size, "method": "scoring server (HTTP)", "rows_per_s": rate}
                 for size, rate in http_rate(model_uri, frames, chunk_size=chunk_size, repeats=repeats).items()]
    for master in masters:
        with session(master, f"throughput-{master}") as spark:
            for size, path in files.items():
                rows.append({"rows": size, "method": f"spark {master}",
                             "rows_per_s": spark_rate(spark, model_uri, spark.read.parquet(str(path)), repeats=repeats)})
    table = pd.DataFrame(rows)
    base = table[table["method"] == "pandas (pyfunc)"].set_index("rows")["rows_per_s"]
    table["vs_pandas"] = table["rows_per_s"] / table["rows"].map(base)
    return table


def settings_table(spark, model_uri: str, source, *, partitions: Sequence[int] = (1, 2, 4, 8),
                   arrow_batch_sizes: Sequence[int] = (100, 1_000, 10_000), repeats: int = 2) -> pd.DataFrame:
    """Rows per second of the same job for each number of ``partitions`` (Arrow batch size left as
    the session has it), then for each Arrow batch size (``spark.sql.execution.arrow.maxRecordsPerBatch``,
    at 2 partitions). Returns ``setting, value, rows_per_s``; the session's batch size is restored."""
    saved = spark.conf.get(ARROW_BATCH)
    rows = []
    try:
        for n in partitions:
            rows.append({"setting": "partitions", "value": n,
                         "rows_per_s": spark_rate(spark, model_uri, source, partitions=n, repeats=repeats)})
        for size in arrow_batch_sizes:
            rows.append({"setting": "arrow batch rows", "value": size,
                         "rows_per_s": spark_rate(spark, model_uri, source, partitions=2, repeats=repeats,
                                                  arrow_batch_size=size)})
    finally:
        spark.conf.set(ARROW_BATCH, saved)
    return pd.DataFrame(rows)


# -- the same job with spark-submit -----------------------------------------------------------------

@dataclass(frozen=True)
class Submitted:
    """What a ``spark-submit`` run did: its command line, exit status, and its output."""

    command: list[str]  # as a person types it: no absolute paths, the tracking URI left out
    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The job's own ``error: ...`` line, if it refused or failed ("" when it succeeded). spark-submit
        passes the Python driver's stderr on through its stdout, so both are searched."""
        lines = [line for line in (self.stdout + "\n" + self.stderr).splitlines() if line.startswith("error: ")]
        return lines[-1] if lines else ("" if self.returncode == 0 else (self.stdout + "\n" + self.stderr).strip()[-400:])


def batch_job() -> Path:
    """The standalone batch-scoring job (``scripts/spark_batch_score.py`` of the checkout)."""
    from mlops_lab.config import repo_root

    root = repo_root()
    if root is None:
        raise SparkSetupError("Cannot find scripts/spark_batch_score.py: run from a clone of the workbook.")
    return root / "scripts" / "spark_batch_score.py"


def submit_command(model_uri: str, input_path: str | Path, output_path: str | Path, *, master: str = "local[2]",
                   partition_by: Sequence[str] = (), tracking_uri: str | None = None) -> list[str]:
    """The ``spark-submit`` command line of the batch job; only ``master`` and the URIs differ on a cluster."""
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master", master, str(batch_job()),
               "--model-uri", model_uri, "--input", str(input_path), "--output", str(output_path)]
    for column in partition_by:
        command += ["--partition-by", column]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    return command


def submit(model_uri: str, input_path: str | Path, output_path: str | Path, *, master: str = "local[2]",
           partition_by: Sequence[str] = (), tracking_uri: str | None = None, timeout: float = 300,
           cwd: str | Path | None = None) -> Submitted:
    """Run the batch job with the venv's ``spark-submit`` (its own JVM, its own process group).

    ``PYSPARK_PYTHON`` is this interpreter, the tracking URI is this process's unless given, and
    Spark's log configuration is the course's (errors only). The whole group is stopped when it
    ends or runs past ``timeout``. Relative paths are relative to ``cwd`` (default: the workspace).
    Check :class:`Submitted` ``returncode`` and ``error``.
    """
    import signal

    from mlops_lab import config, processes

    check_java()
    folder = config.workspace() / "spark"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log4j2.properties").write_text(LOG4J2)
    tracking_uri = tracking_uri or config.child_env()["MLFLOW_TRACKING_URI"]
    command = submit_command(model_uri, input_path, output_path, master=master, partition_by=partition_by,
                             tracking_uri=tracking_uri)
    java = f"-Dlog4j2.configurationFile={(folder / 'log4j2.properties').as_uri()}"
    command[1:1] = ["--conf", f"spark.driver.extraJavaOptions={java}", "--conf", "spark.ui.enabled=false",
                    "--conf", "spark.ui.showConsoleProgress=false", "--conf", "spark.driver.host=127.0.0.1",
                    "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", f"spark.local.dir={folder / 'local'}"]
    env = {**os.environ, **config.child_env(), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=str(cwd or config.workspace()))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\nerror: the job ran past {timeout:g} s and was stopped"
    finally:
        if processes.group_members(proc.pid):
            processes.stop_group(proc.pid, name="spark-submit")
    shown = ["spark-submit", "--master", master, "scripts/spark_batch_score.py",
             *submit_command(model_uri, input_path, output_path, master=master, partition_by=partition_by)[4:]]
    return Submitted(shown, proc.returncode if proc.returncode is not None else -9, out, err)
