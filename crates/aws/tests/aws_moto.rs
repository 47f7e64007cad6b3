//! The AWS paths against a real AWS API (moto_server on a free loopback port): create the
//! resources (twice: idempotent), stream real recorded tweets through Firehose PutRecordBatch,
//! read the objects Firehose delivered back from S3, spill and replay what a broken stream
//! refused, then destroy everything and verify it is gone.
//! One test in this binary: it sets credentials in its own environment before any thread.

use std::time::Duration;

use flagship_aws::{self as aws, Resources};
use flagship_ingest::firehose::FirehoseSink;
use flagship_ingest::source::Replay;
use flagship_testkit::{MotoServer, fixture};

#[test]
fn aws_lifecycle_and_firehose_sink_against_moto() {
    let moto = MotoServer::start();
    // SAFETY: the only test in this binary, before any other thread exists.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Not us-east-1: the bucket needs its LocationConstraint.
        // Plain HTTP to moto: the TLS-only policy would lock the test out of its own bucket
        // (the second mission below has it, and shows it working).
        let r = Resources::for_bucket("flagship-ingest", "eu-west-1")
            .with_endpoint(Some(moto.endpoint()));
        assert!(!r.tls_only);
        let c = aws::Clients::new(&r).await;
        let first = aws::create(&c, &r).await.unwrap();
        let states: Vec<&str> = first.iter().map(|s| s.state.as_str()).collect();
        assert!(
            states.contains(&"created")
                && states.contains(&"delivery stream created")
                && states.contains(&"ACTIVE"),
            "{states:?}"
        );
        let again = aws::create(&c, &r).await.unwrap();
        assert!(
            again.iter().all(|s| !s.state.contains("created")),
            "idempotent: {again:?}"
        );
        let status = aws::status(&c, &r).await.unwrap();
        assert_eq!(
            status.iter().map(|s| s.state.as_str()).collect::<Vec<_>>(),
            ["exists", "exists", "exists", "ACTIVE"]
        );

        // What was configured, read back.
        let loc =
            c.s3.get_bucket_location()
                .bucket(&r.bucket)
                .send()
                .await
                .unwrap();
        assert_eq!(
            loc.location_constraint().map(|l| l.as_str()),
            Some("eu-west-1")
        );
        let pab =
            c.s3.get_public_access_block()
                .bucket(&r.bucket)
                .send()
                .await
                .unwrap();
        let pab = pab.public_access_block_configuration().unwrap();
        assert_eq!(pab.block_public_acls(), Some(true));
        assert_eq!(pab.restrict_public_buckets(), Some(true));
        let policy = c
            .iam
            .get_role_policy()
            .role_name(&r.role)
            .policy_name("flagship-firehose-delivery")
            .send()
            .await
            .unwrap();
        let doc = urlencoding_decode(policy.policy_document());
        assert!(
            doc.contains("arn:aws:s3:::flagship-ingest/datasets/twitter/kinesis-demo/*"),
            "{doc}"
        );
        assert!(doc.contains(":log-stream:DestinationDelivery"), "{doc}");
        let d = c
            .firehose
            .describe_delivery_stream()
            .delivery_stream_name(&r.stream)
            .send()
            .await
            .unwrap();
        let dest = &d.delivery_stream_description().unwrap().destinations()[0];
        let s3d = dest.extended_s3_destination_description().unwrap();
        assert_eq!(s3d.prefix(), Some("datasets/twitter/kinesis-demo/"));
        assert!(s3d.error_output_prefix().is_some());
        assert_eq!(
            s3d.buffering_hints().unwrap().interval_in_seconds(),
            Some(60)
        );
        // Failed deliveries land beside the data prefix, never inside it (combine reads it).
        assert!(
            s3d.error_output_prefix()
                .unwrap()
                .starts_with("datasets/twitter/kinesis-demo-errors/"),
            "{:?}",
            s3d.error_output_prefix()
        );
        // Firehose may assume the role for this account only.
        let role = c.iam.get_role().role_name(&r.role).send().await.unwrap();
        let trust = urlencoding_decode(
            role.role()
                .unwrap()
                .assume_role_policy_document()
                .unwrap_or_default(),
        );
        assert!(trust.contains("sts:ExternalId"), "{trust}");

        // A second mission in the same account: its own bucket (already encrypted with KMS,
        // which stays), stream, role and log group; the first mission's are untouched.
        let mut other = Resources::new("flagship-mars", "eu-west-1", "mars/raw", "mars_stream")
            .with_endpoint(r.endpoint_url.clone());
        other.tls_only = true;
        c.s3.create_bucket()
            .bucket(&other.bucket)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let kms = aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
            .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .kms_master_key_id("alias/mars")
            .build()
            .unwrap();
        c.s3.put_bucket_encryption()
            .bucket(&other.bucket)
            .server_side_encryption_configuration(
                aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                    .rules(
                        aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(kms)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_ne!(other.role, r.role);
        assert_ne!(other.log_group, r.log_group);
        let steps = aws::create(&c, &other).await.unwrap();
        assert!(
            steps.iter().any(|s| s.state.contains("aws:kms kept")),
            "{steps:?}"
        );
        // … and its role may use that key (through S3, for its prefix only).
        let p = c
            .iam
            .get_role_policy()
            .role_name(&other.role)
            .policy_name("flagship-firehose-delivery")
            .send()
            .await
            .unwrap();
        let doc = urlencoding_decode(p.policy_document());
        assert!(
            doc.contains("kms:GenerateDataKey") && doc.contains("s3.eu-west-1.amazonaws.com"),
            "{doc}"
        );
        // The TLS-only policy is there, and moto enforces it: a plain-HTTP put is refused.
        let bp =
            c.s3.get_bucket_policy()
                .bucket(&other.bucket)
                .send()
                .await
                .unwrap();
        let bp = bp.policy().unwrap();
        assert!(
            bp.contains(aws::TLS_ONLY_SID) && bp.contains("aws:SecureTransport"),
            "{bp}"
        );
        let put =
            c.s3.put_object()
                .bucket(&other.bucket)
                .key("x")
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
                .send()
                .await;
        assert!(put.is_err(), "a request without TLS was let through");
        let first_policy_again = c
            .iam
            .get_role_policy()
            .role_name(&r.role)
            .policy_name("flagship-firehose-delivery")
            .send()
            .await
            .unwrap();
        assert_eq!(
            first_policy_again.policy_document(),
            policy.policy_document(),
            "the second create changed the first mission's policy"
        );
        // The first mission's stream name for another bucket is refused, not rewired.
        let clash = Resources::for_bucket("flagship-mars", "eu-west-1")
            .with_endpoint(r.endpoint_url.clone());
        let e = aws::create(&c, &clash).await.unwrap_err().to_string();
        assert!(e.contains("another deployment"), "{e}");
        // The same stream with another --prefix would strand its deliveries: refused.
        let moved = Resources::new(&r.bucket, "eu-west-1", "elsewhere/", &r.stream)
            .with_endpoint(r.endpoint_url.clone());
        let e = aws::create(&c, &moved).await.unwrap_err().to_string();
        assert!(e.contains("writes under prefix"), "{e}");
        // The bucket stays (its policy refuses plain HTTP, so it could not be emptied here).
        aws::destroy(&c, &other, false).await.unwrap();
        let status = aws::status(&c, &r).await.unwrap();
        assert_eq!(
            status.iter().map(|s| s.state.as_str()).collect::<Vec<_>>(),
            ["exists", "exists", "exists", "ACTIVE"],
            "destroying the second mission left the first whole"
        );

        // Stream the real recorded payloads through PutRecordBatch.
        let dir = tempfile::tempdir().unwrap();
        let q = flagship_store::storage::Store::open(
            &flagship_store::storage::Location::Local(dir.path().join("q")),
            &Default::default(),
        )
        .unwrap();
        let mut replay = Replay::new(Replay::files_of(&fixture("twitter-v2")).unwrap(), None);
        let sink = FirehoseSink::new(
            c.firehose.clone(),
            &r.stream,
            dir.path().join("spill.jsonl"),
        );
        let totals = flagship_ingest::run(
            &mut replay,
            sink,
            &q,
            "ingest.jsonl",
            &Default::default(),
            std::future::pending(),
            &|_| {},
        )
        .await
        .unwrap();
        println!("{totals}");
        assert_eq!(totals.sink.sent, totals.received);
        assert_eq!(totals.sink.spilled, 0);
        assert_eq!(
            totals.quarantined, 1,
            "the truncated line of streaming_output_with_error.jsonl"
        );
        println!(
            "records per PutRecordBatch call: {:.1}",
            totals.sink.sent as f64 / totals.sink.calls as f64
        );
        assert!(totals.sink.calls as u64 <= totals.received.div_ceil(500) + 1);

        // Read back what Firehose delivered: Firehose's key layout, every tweet once.
        let store = flagship_store::storage::Store::open(
            &flagship_store::storage::Location::parse(
                "s3://flagship-ingest/datasets/twitter/kinesis-demo",
                std::path::Path::new("."),
            )
            .unwrap(),
            &flagship_store::storage::S3Options {
                endpoint_url: Some(moto.endpoint()),
                region: Some("eu-west-1".into()),
            },
        )
        .unwrap();
        let mut read = flagship_platforms::jsonl::ReadReport::default();
        for e in store.list("").await.unwrap() {
            assert!(
                flagship_core::layout::hour_of_key(&e.key).is_some(),
                "{}",
                e.key
            );
            read.read(&e.key, &store.get(&e.key).await.unwrap(), None);
        }
        assert!(read.bad_lines.is_empty());
        let mut ids: Vec<&str> = read.posts.iter().map(|t| t.id.as_str()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "no tweet twice");
        assert_eq!(n as u64, totals.received);

        // A stream that refuses everything: records are spilled, not dropped; then replayed.
        let spill = dir.path().join("spill.jsonl");
        let mut replay = Replay::new(vec![fixture("twitter-v2/brexit.jsonl")], None);
        let broken = FirehoseSink::new(c.firehose.clone(), "no_such_stream", spill.clone())
            .with_retries(2, Duration::from_millis(1));
        let t = flagship_ingest::run(
            &mut replay,
            broken,
            &q,
            "ingest.jsonl",
            &Default::default(),
            std::future::pending(),
            &|_| {},
        )
        .await
        .unwrap();
        assert_eq!(t.sink.sent, 0);
        assert_eq!(t.sink.spilled, 100);
        let sink = FirehoseSink::new(
            c.firehose.clone(),
            &r.stream,
            dir.path().join("spill-again.jsonl"),
        );
        let replayed = flagship_ingest::firehose::replay_spill(&spill, sink)
            .await
            .unwrap();
        assert_eq!((replayed.sent, replayed.spilled), (100, 0));
        assert!(!spill.exists() && !spill.with_extension("sending").exists());

        // Destroy in reverse, verified; then nothing is left.
        let gone = aws::destroy(&c, &r, true).await.unwrap();
        assert!(
            gone.iter().all(|s| s.state.contains("deleted (verified)")),
            "{gone:?}"
        );
        let status = aws::status(&c, &r).await.unwrap();
        assert!(status.iter().all(|s| s.state == "missing"), "{status:?}");
    });
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
