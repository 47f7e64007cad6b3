"""PySpark side of `cargo xtask bench textproc`: the same textproc steps as flagship's
DataFusion plan (crates/textproc), on the same filtered-schema hour files, with
`local[*]`. Prints one JSON line: wall time (session start to files written) and peak RSS
of this Python process plus the Spark JVM.

Regexes use Java's (?U) flag so \\w, \\b, \\s are Unicode-aware like Rust's `regex`.
Each output partition is sorted by (created_at, id), as flagship sorts each hour file.
"""
import argparse
import json
import os
import resource
import shutil
import time


def vm_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)

    start = time.time()
    from pyspark.sql import SparkSession, functions as F

    spark = (
        SparkSession.builder.master("local[*]")
        .appName("flagship-bench-textproc")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.parquet(args.input)

    t = F.col("text")
    t = F.replace(F.replace(F.replace(t, F.lit("&lt;"), F.lit("<")), F.lit("&gt;"), F.lit(">")), F.lit("&amp;"), F.lit("&"))
    t = F.regexp_replace(t, r"(?iU)\b(?:https?://|www\.)\S+", " ")
    t = F.regexp_replace(t, r"(?U)\B@\w+", " ")
    t = F.regexp_replace(t, r"(?U)#(\w+)", "$1")
    t = F.trim(F.regexp_replace(t, r"(?U)\s+", " "))
    df = df.withColumn("text_model", t)
    df = df.withColumn("text_analysis", F.trim(F.regexp_replace(F.lower(F.col("text_model")), "[^a-z]+", " ")))
    words = F.when(F.col("text_model") == "", F.lit(0)).otherwise(F.size(F.split(F.col("text_model"), " ")))
    df = df.withColumn("num_words", words)
    n = F.col("num_words")
    wb = F.when(n <= 5, "0-5")
    for i in range(1, 12):
        label = "20-25" if i == 4 else f"{5 * i + 1}-{5 * i + 5}"
        wb = wb.when(n <= 5 * (i + 1), label)
    df = df.withColumn("word_bin", wb.otherwise("61+"))
    h = F.hour(F.col("created_at"))
    df = df.withColumn("hour_of_day", h)
    df = df.withColumn("weekday", F.date_format(F.col("created_at"), "EEEE"))
    tod = F.when(h.isNull(), F.lit(None))
    for upper, label in [(4, "Late Night"), (8, "Early Morning"), (12, "Morning"), (16, "Afternoon"), (20, "Evening")]:
        tod = tod.when(h <= upper, label)
    df = df.withColumn("time_of_day", tod.otherwise("Night"))
    df = df.withColumn("client", F.col("source"))
    df = df.sortWithinPartitions("created_at", "id")
    df.write.option("compression", "zstd").parquet(args.output)
    seconds = time.time() - start
    rows = spark.read.parquet(args.output).count()

    jvm_pid = spark.sparkContext._gateway.proc.pid if spark.sparkContext._gateway.proc else None
    jvm = vm_hwm_mib(jvm_pid) if jvm_pid else None
    # spark-submit may run the JVM as a child of a shell: take the largest descendant.
    try:
        kids = os.popen(f"pgrep -P {jvm_pid}").read().split() if jvm_pid else []
        for k in kids:
            v = vm_hwm_mib(int(k))
            if v and (jvm is None or v > jvm):
                jvm = v
    except Exception:
        pass
    spark.stop()
    py = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({
        "engine": "PySpark local[*]",
        "tweets": rows,
        "seconds": seconds,
        "tweets_per_second": rows / seconds,
        "peak_rss_mib": (jvm or 0.0) + py,
        "jvm_peak_rss_mib": jvm,
        "python_peak_rss_mib": py,
    }))


if __name__ == "__main__":
    main()
