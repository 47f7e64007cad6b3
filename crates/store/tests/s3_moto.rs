//! `s3://` locations through `object_store` against a real S3 API (moto_server on loopback):
//! write, list (paginated), read back Parquet, atomic overwrite, errors naming the object.
//!
//! One test in this binary: it points its own process at a shared credentials file with a
//! named profile (no AWS_ACCESS_KEY_ID), before any thread starts — credentials that only the
//! full AWS chain finds, as a user's `~/.aws/credentials` would be.

use bytes::Bytes;
use flagship_core::schema::Stage;
use flagship_platforms::jsonl::ReadReport;
use flagship_store::records;
use flagship_store::storage::{Location, S3Options, Store};
use flagship_testkit::{MotoServer, fixture};

#[test]
fn s3_location_against_moto() {
    let moto = MotoServer::start();
    moto.create_bucket("flagship-test");
    let home = tempfile::tempdir().unwrap();
    let creds = home.path().join("credentials");
    std::fs::write(
        &creds,
        "[flagship-ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    // SAFETY: the only test in this binary, before any other thread exists.
    unsafe {
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            std::env::remove_var(k);
        }
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &creds);
        std::env::set_var("AWS_CONFIG_FILE", home.path().join("config"));
        std::env::set_var("AWS_PROFILE", "flagship-ci");
        // No instance-metadata lookups from a test.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = S3Options {
            endpoint_url: Some(moto.endpoint()),
            region: Some("us-east-1".into()),
        };
        let loc = Location::parse("s3://flagship-test/datasets/twitter", std::path::Path::new(".")).unwrap();
        let store = Store::open(&loc, &opts).unwrap();

        // More objects than one list page (moto pages at 1000 keys like S3).
        for i in 0..1005 {
            store
                .put(&format!("raw/2022/01/01/00/obj-{i:04}"), Bytes::from(format!("{i}\n")))
                .await
                .unwrap();
        }
        let listed = store.list("raw").await.unwrap();
        assert_eq!(listed.len(), 1005);
        assert_eq!(listed[0].key, "raw/2022/01/01/00/obj-0000");
        assert_eq!(store.get("raw/2022/01/01/00/obj-1004").await.unwrap(), "1004\n");

        // Real tweets as Parquet on S3, read back equal.
        let mut r = ReadReport::default();
        r.read("brexit.jsonl", &std::fs::read(fixture("twitter-v2/brexit.jsonl")).unwrap(), None);
        let batch = records::to_batch(&r.posts).unwrap();
        store.write_parquet("combined/2021092200.parquet", &Stage::Raw.schema(), &[batch]).await.unwrap();
        let (_, batches) = store.read_parquet("combined/2021092200.parquet").await.unwrap();
        assert_eq!(records::from_batch(&batches[0]).unwrap(), r.posts);

        // Overwrite replaces whole; a missing key names its full location.
        store.put("raw/2022/01/01/00/obj-0000", Bytes::from_static(b"new\n")).await.unwrap();
        assert_eq!(store.get("raw/2022/01/01/00/obj-0000").await.unwrap(), "new\n");
        let e = store.get("nope/x").await.unwrap_err().to_string();
        assert!(e.starts_with("s3://flagship-test/datasets/twitter/nope/x:"), "{e}");

        // A bucket that does not exist is an error, not an empty listing.
        let missing = Store::open(
            &Location::parse("s3://no-such-bucket/x", std::path::Path::new(".")).unwrap(),
            &opts,
        )
        .unwrap();
        assert!(missing.list("").await.is_err());
        println!("moto at {}: 1005 objects listed across pages, {} tweets round-tripped through s3:// Parquet", moto.endpoint(), r.posts.len());
    });
}
