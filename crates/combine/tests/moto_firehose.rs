//! Objects delivered by a real Firehose API (moto_server: DirectPut stream → S3, Firehose's key
//! layout) combine to the same rows as the same records laid out by a local sink.
//!
//! The records are put with boto3 from the set-up venv (moto's own client library); ingest's
//! Rust sink (aws-sdk-firehose) is issue #3's. One test in this binary: it sets credentials
//! in its own environment before any thread starts.

use std::process::Command;

use bytes::Bytes;
use chrono::Utc;
use flagship_core::layout::object_key;
use flagship_store::storage::{Location, S3Options, Store};
use flagship_testkit::{MotoServer, fixture, venv};

const PUT: &str = r#"
import boto3, json, sys
endpoint, files = sys.argv[1], sys.argv[2:]
fh = boto3.client("firehose", endpoint_url=endpoint, region_name="us-east-1")
fh.create_delivery_stream(
    DeliveryStreamName="twitter_delivery_stream",
    DeliveryStreamType="DirectPut",
    ExtendedS3DestinationConfiguration={
        "RoleARN": "arn:aws:iam::123456789012:role/firehose",
        "BucketARN": "arn:aws:s3:::flagship-raw",
        "Prefix": "datasets/twitter/kinesis-demo/",
        "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 60},
    },
)
calls = 0
for f in files:
    lines = [l for l in open(f, "rb").read().split(b"\n") if l.strip()]
    for i in range(0, len(lines), 500):
        batch = [{"Data": l + b"\n"} for l in lines[i:i + 500]]
        r = fh.put_record_batch(DeliveryStreamName="twitter_delivery_stream", Records=batch)
        assert r["FailedPutCount"] == 0, r
        calls += 1
print(json.dumps({"calls": calls}))
"#;

fn payload_files() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(fixture("twitter-v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

#[test]
fn moto_firehose_objects_combine_like_the_local_layout() {
    let moto = MotoServer::start();
    moto.create_bucket("flagship-raw");
    // SAFETY: the only test in this binary, before any other thread exists.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let before = Utc::now();
    let out = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(PUT)
        .arg(moto.endpoint())
        .args(payload_files())
        .output()
        .expect("run the venv's python (cargo xtask setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = Utc::now();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = S3Options {
            endpoint_url: Some(moto.endpoint()),
            region: Some("us-east-1".into()),
        };
        let s3 = Store::open(
            &Location::parse(
                "s3://flagship-raw/datasets/twitter/kinesis-demo",
                std::path::Path::new("."),
            )
            .unwrap(),
            &opts,
        )
        .unwrap();
        let listed = s3.list("").await.unwrap();
        assert!(!listed.is_empty());
        for e in &listed {
            // Firehose's own key layout: YYYY/MM/DD/HH/<stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid>.
            assert!(
                flagship_core::layout::hour_of_key(&e.key).is_some(),
                "{}",
                e.key
            );
            assert!(e.key.contains("/twitter_delivery_stream-1-"), "{}", e.key);
        }

        // The same records as a local sink lays them out: one object per file, this hour.
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(
            &Location::Local(dir.path().join("raw")),
            &S3Options::default(),
        )
        .unwrap();
        for (i, f) in payload_files().iter().enumerate() {
            let lines: Vec<u8> = std::fs::read(f)
                .unwrap()
                .split(|&b| b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .flat_map(|l| [l, b"\n"].concat())
                .collect();
            let key = object_key("", "twitter_delivery_stream", before, &format!("local-{i}"));
            local.put(&key, Bytes::from(lines)).await.unwrap();
        }

        let ctx = flagship_store::frames::local_session();
        let combine = |raw: Store, name: &'static str| {
            let dir = dir.path().to_owned();
            let ctx = ctx.clone();
            async move {
                let out =
                    Store::open(&Location::Local(dir.join(name)), &S3Options::default()).unwrap();
                let q = Store::open(
                    &Location::Local(dir.join(format!("{name}-quarantine"))),
                    &S3Options::default(),
                )
                .unwrap();
                let report = flagship_combine::run(&ctx, &raw, "", &out, &q, &|_, _, _| {})
                    .await
                    .unwrap();
                let mut rows = Vec::new();
                for h in &report.hours {
                    let (_, batches) = out.read_parquet(&h.output).await.unwrap();
                    for b in batches {
                        // Object keys and arrival hours differ between the two deliveries.
                        let keep: Vec<usize> = (0..b.num_columns())
                            .filter(|&i| {
                                !matches!(
                                    b.schema().field(i).name().as_str(),
                                    "source_object" | "hour"
                                )
                            })
                            .collect();
                        rows.push(b.project(&keep).unwrap());
                    }
                }
                (report, rows)
            }
        };
        let (from_moto, moto_rows) = combine(s3, "combined-moto").await;
        let (from_local, local_rows) = combine(local, "combined-local").await;
        println!("moto:  {from_moto}\nlocal: {from_local}");
        if from_moto.hours.len() == 1 && from_local.hours.len() == 1 {
            assert_eq!(moto_rows, local_rows);
        } else {
            // The put straddled an hour boundary: compare the rows across hours.
            assert!(after.format("%H").to_string() != before.format("%H").to_string());
            let all = |v: &[arrow::array::RecordBatch]| {
                let mut t: Vec<flagship_core::Post> = Vec::new();
                for b in v {
                    let raw_cols: Vec<usize> =
                        (0..flagship_core::schema::Stage::Raw.schema().fields().len()).collect();
                    t.extend(
                        flagship_store::records::from_batch(&b.project(&raw_cols).unwrap())
                            .unwrap(),
                    );
                }
                t.sort_by(|a, b| a.id.cmp(&b.id));
                t
            };
            assert_eq!(all(&moto_rows), all(&local_rows));
        }
        assert_eq!(from_moto.totals.rows, from_local.totals.rows);
        assert_eq!(from_moto.totals.quarantined, 1);
        assert_eq!(from_local.totals.quarantined, 1);
        assert!(from_moto.totals.rows > 500);

        // The next stages read and write s3:// through DataFusion's object store registry.
        let s3_area = |p: &str| {
            Store::open(
                &Location::parse(&format!("s3://flagship-raw/{p}"), std::path::Path::new("."))
                    .unwrap(),
                &opts,
            )
            .unwrap()
        };
        let combined = s3_area("combined");
        let moto_raw = s3_area("datasets/twitter/kinesis-demo");
        let report = flagship_combine::run(
            &ctx,
            &moto_raw,
            "",
            &combined,
            &s3_area("quarantine"),
            &|_, _, _| {},
        )
        .await
        .unwrap();
        assert_eq!(report.totals.rows, from_moto.totals.rows);
        // DataFusion reads those s3:// outputs back through the registered object store
        // (what filter and textproc do; running them here would make this stage import them).
        let hour_files: Vec<String> = combined
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        assert_eq!(hour_files.len(), report.hours.len());
        let df = flagship_store::frames::read_parquet(&ctx, &combined, &hour_files)
            .await
            .unwrap();
        assert_eq!(df.count().await.unwrap() as u64, report.totals.rows);
    });
}
