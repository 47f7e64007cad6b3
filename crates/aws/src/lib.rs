//! flagship-aws: administration of the AWS resources behind ingest — `create` (idempotent),
//! `status`, `destroy` (in reverse, each deletion verified). An administration crate, not a
//! stage: it never reads or writes tweets, and the streaming path (`ingest`, `watch`) does not
//! link it.
//!
//! - S3 bucket: public access blocked, default encryption (SSE-S3, unless the bucket already
//!   has a rule — an SSE-KMS key is kept), a bucket policy that denies every request without
//!   TLS (`aws:SecureTransport`; other statements kept), `LocationConstraint` set except in
//!   us-east-1 (where AWS rejects it — the seed's bug);
//! - CloudWatch log group `/aws/kinesisfirehose/<stream>` (with retention) and log stream for
//!   Firehose's delivery errors;
//! - IAM role `flagship-firehose-<stream>` trusted by `firehose.amazonaws.com` for this account
//!   only (`sts:ExternalId` = the account, the confused-deputy guard Firehose documents), with one inline least-privilege
//!   policy: the S3 actions Firehose needs on exactly that bucket and prefix,
//!   `logs:PutLogEvents` on exactly that log stream (the seed attached whichever policy the
//!   account listed first). Named after the stream, so a second mission never shares them;
//! - Firehose DirectPut stream: prefix, error-output prefix *beside* the data prefix, 5 MB /
//!   60 s buffering, logging on; waited for ACTIVE by polling `DescribeDeliveryStream`, never
//!   by sleeping a fixed time. A stream of the same name delivering to another bucket is
//!   refused before anything is changed.
//!
//! The streaming host itself (an EC2 instance per mission) is [`host`].
//!
//! Credentials come from the AWS default chain; `endpoint_url` points every client at an
//! emulator (moto). The SDK configuration (HTTP client, one TLS crypto stack) is
//! `flagship_store::aws::sdk_config`, shared with ingest's Firehose sink.

use std::time::Duration;

pub mod host;

use aws_sdk_firehose::types::{
    BufferingHints, CloudWatchLoggingOptions, DeliveryStreamStatus, DeliveryStreamType,
    ExtendedS3DestinationConfiguration,
};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};
use serde::Serialize;

/// What went wrong, with the resource and the likely cause.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{0}")]
    Fatal(String),
}

/// Names of everything ingest needs in AWS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resources {
    pub region: String,
    pub bucket: String,
    /// Key prefix Firehose writes under (`datasets/twitter/kinesis-demo/`).
    pub prefix: String,
    pub stream: String,
    pub role: String,
    pub log_group: String,
    pub log_stream: String,
    pub log_retention_days: i32,
    pub endpoint_url: Option<String>,
    /// Put the bucket policy that denies requests without TLS. On by default; off only for an
    /// emulator reached over plain HTTP, which the policy would lock out.
    pub tls_only: bool,
}

impl Resources {
    /// The seed's names for a bucket (prefix `datasets/twitter/kinesis-demo/`, stream
    /// `twitter_delivery_stream`).
    pub fn for_bucket(bucket: &str, region: &str) -> Resources {
        Resources::new(
            bucket,
            region,
            "datasets/twitter/kinesis-demo/",
            "twitter_delivery_stream",
        )
    }

    /// The resources of one delivery stream. The role and the log group are named after the
    /// stream, so a second mission (another bucket, another stream) in the same account gets
    /// its own and never rewrites or deletes the first one's.
    pub fn new(bucket: &str, region: &str, prefix: &str, stream: &str) -> Resources {
        // IAM role names: at most 64 of [A-Za-z0-9+=,.@_-].
        let role: String = format!("flagship-firehose-{stream}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        Resources {
            region: region.to_owned(),
            bucket: bucket.to_owned(),
            prefix: format!("{}/", prefix.trim_matches('/')),
            stream: stream.to_owned(),
            role,
            log_group: format!("/aws/kinesisfirehose/{stream}"),
            log_stream: "DestinationDelivery".into(),
            log_retention_days: 30,
            endpoint_url: None,
            tls_only: true,
        }
    }

    /// Against an emulator's endpoint (moto, LocalStack); a plain-HTTP one cannot take the
    /// TLS-only bucket policy.
    pub fn with_endpoint(mut self, endpoint_url: Option<String>) -> Resources {
        self.tls_only = !endpoint_url
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        self.endpoint_url = endpoint_url;
        self
    }

    /// Where Firehose puts records it could not deliver: beside the data prefix, never inside
    /// it (combine reads the data prefix; records under it outside the hour layout would be
    /// reported but never combined).
    pub fn error_prefix(&self) -> String {
        format!("{}!{{firehose:error-output-type}}/", self.error_root())
    }

    /// The folder [`Resources::error_prefix`] expands under (`raw-errors/` for `raw/`).
    fn error_root(&self) -> String {
        format!("{}-errors/", self.prefix.trim_end_matches('/'))
    }

    /// The objects Firehose writes: the data prefix and the error prefix beside it.
    fn object_arns(&self) -> [String; 2] {
        [
            format!("arn:aws:s3:::{}/{}*", self.bucket, self.prefix),
            format!("arn:aws:s3:::{}/{}*", self.bucket, self.error_root()),
        ]
    }
}

/// The clients, built once from the default credential chain.
pub struct Clients {
    pub sts: aws_sdk_sts::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub s3: aws_sdk_s3::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub firehose: aws_sdk_firehose::Client,
}

impl Clients {
    pub async fn new(r: &Resources) -> Clients {
        let conf = flagship_store::aws::sdk_config(&r.region, r.endpoint_url.as_deref()).await;
        let s3_conf = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(r.endpoint_url.is_some())
            .build();
        Clients {
            sts: aws_sdk_sts::Client::new(&conf),
            ec2: aws_sdk_ec2::Client::new(&conf),
            ssm: aws_sdk_ssm::Client::new(&conf),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            iam: aws_sdk_iam::Client::new(&conf),
            logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
            firehose: aws_sdk_firehose::Client::new(&conf),
        }
    }
}

/// One line of what create / status / destroy found or did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub resource: String,
    pub state: String,
}

fn step(resource: impl Into<String>, state: impl Into<String>) -> Step {
    let s = Step {
        resource: resource.into(),
        state: state.into(),
    };
    tracing::info!("{}: {}", s.resource, s.state);
    s
}

fn fail<E: std::error::Error>(what: &str) -> impl Fn(E) -> AwsError + '_ {
    move |e| {
        AwsError::Fatal(format!(
            "{what}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        ))
    }
}

/// Firehose may assume the role only on behalf of this account (the confused-deputy guard):
/// Firehose passes the account id as the external id when it assumes a delivery role, which
/// is the condition its documentation gives.
pub fn trust_policy(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "firehose.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": account}}
        }]
    })
    .to_string()
}

/// The bucket policy statement that refuses every request not made over TLS.
pub const TLS_ONLY_SID: &str = "flagship-deny-insecure-transport";

/// `existing` (a bucket policy, or none) with the TLS-only statement added once; other
/// statements are kept as they are.
pub fn with_tls_only(existing: Option<&str>, bucket: &str) -> Result<String, AwsError> {
    let mut doc: serde_json::Value = match existing {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| AwsError::Fatal(format!("the bucket policy is not JSON: {e}")))?,
        None => serde_json::json!({"Version": "2012-10-17", "Statement": []}),
    };
    let statements = doc["Statement"]
        .as_array_mut()
        .ok_or_else(|| AwsError::Fatal("the bucket policy has no Statement list".into()))?;
    if !statements.iter().any(|s| s["Sid"] == TLS_ONLY_SID) {
        statements.push(serde_json::json!({
            "Sid": TLS_ONLY_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        }));
    }
    Ok(doc.to_string())
}

/// The inline policy: exactly this bucket, its data and error prefixes, and this log stream.
pub fn delivery_policy(r: &Resources, account: &str, kms_key: Option<&str>) -> String {
    let mut doc = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                "Resource": [format!("arn:aws:s3:::{}", r.bucket)]
            },
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
                "Resource": r.object_arns()
            },
            {
                "Effect": "Allow",
                "Action": ["logs:PutLogEvents"],
                "Resource": [format!("arn:aws:logs:{}:{account}:log-group:{}:log-stream:{}", r.region, r.log_group, r.log_stream)]
            }
        ]
    });
    // A bucket encrypted with a customer-managed KMS key: Firehose must be allowed to use that
    // key, through S3 only and for these prefixes only.
    if let Some(key) = kms_key {
        let resource = if key.starts_with("arn:") { key } else { "*" };
        doc["Statement"]
            .as_array_mut()
            .expect("statements")
            .push(serde_json::json!({
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": [resource],
                "Condition": {
                    "StringEquals": {"kms:ViaService": format!("s3.{}.amazonaws.com", r.region)},
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": r.object_arns()}
                }
            }));
    }
    doc.to_string()
}

const POLICY_NAME: &str = "flagship-firehose-delivery";

async fn bucket_exists(c: &Clients, r: &Resources) -> Result<bool, AwsError> {
    match c.s3.head_bucket().bucket(&r.bucket).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
        Err(e) => Err(fail("checking the bucket")(e)),
    }
}

/// The IAM role `name`, or `None` when IAM says there is none (any other error is an error).
pub(crate) async fn get_role(
    c: &Clients,
    name: &str,
) -> Result<Option<aws_sdk_iam::types::Role>, AwsError> {
    match c.iam.get_role().role_name(name).send().await {
        Ok(out) => Ok(out.role().cloned()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(fail("reading the IAM role")(e)),
    }
}

async fn role_arn(c: &Clients, r: &Resources) -> Result<Option<String>, AwsError> {
    Ok(get_role(c, &r.role).await?.map(|x| x.arn().to_owned()))
}

async fn stream_status(
    c: &Clients,
    r: &Resources,
) -> Result<Option<DeliveryStreamStatus>, AwsError> {
    match c
        .firehose
        .describe_delivery_stream()
        .delivery_stream_name(&r.stream)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .delivery_stream_description()
            .map(|d| d.delivery_stream_status().clone())),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(fail("describing the delivery stream")(e)),
    }
}

async fn log_group_exists(c: &Clients, r: &Resources) -> Result<bool, AwsError> {
    let out = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix(&r.log_group)
        .send()
        .await
        .map_err(fail("listing log groups"))?;
    Ok(out
        .log_groups()
        .iter()
        .any(|g| g.log_group_name() == Some(r.log_group.as_str())))
}

/// Polls `check` every `every` until it is true or `limit` passes.
async fn poll<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<(), AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, AwsError>>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(AwsError::Fatal(format!(
                "{what}: still not done after {limit:?}"
            )));
        }
        tokio::time::sleep(every).await;
    }
}

/// A delivery stream of this name that delivers to another bucket belongs to another
/// deployment: refused before anything is created or changed.
async fn check_stream_owner(c: &Clients, r: &Resources) -> Result<(), AwsError> {
    if stream_status(c, r).await?.is_none() {
        return Ok(());
    }
    let d = c
        .firehose
        .describe_delivery_stream()
        .delivery_stream_name(&r.stream)
        .send()
        .await
        .map_err(fail("describing the delivery stream"))?;
    let dest = d
        .delivery_stream_description()
        .and_then(|d| d.destinations().first())
        .and_then(|d| d.extended_s3_destination_description());
    let ours = format!("arn:aws:s3:::{}", r.bucket);
    if let Some(b) = dest.map(|d| d.bucket_arn()).filter(|b| *b != ours) {
        return Err(AwsError::Fatal(format!(
            "delivery stream {} already delivers to {b} — another deployment's; pass another --stream",
            r.stream
        )));
    }
    // The role's policy follows `--prefix`: a stream writing under another prefix would be
    // left with a policy that no longer lets it deliver.
    if let Some(p) = dest.and_then(|d| d.prefix()).filter(|p| *p != r.prefix) {
        return Err(AwsError::Fatal(format!(
            "delivery stream {} writes under prefix {p:?}, not {:?}: pass --prefix {p:?} (or another --stream)",
            r.stream, r.prefix
        )));
    }
    Ok(())
}

/// Creates what is missing; leaves what exists. Safe to run again.
pub async fn create(c: &Clients, r: &Resources) -> Result<Vec<Step>, AwsError> {
    check_stream_owner(c, r).await?;
    let mut steps = vec![ensure_bucket(c, r).await?];
    let (bucket_step, kms_key) = secure_bucket(c, r).await?;
    steps.push(bucket_step);
    steps.push(ensure_log_group(c, r).await?);
    steps.push(ensure_log_stream(c, r).await?);
    let account = account_id(c).await?;
    let (arn, role_step) = ensure_role(c, r, &account).await?;
    steps.push(role_step);
    steps.push(put_delivery_policy(c, r, &account, kms_key.as_deref()).await?);
    steps.push(ensure_stream(c, r, &arn).await?);
    steps.push(wait_until_active(c, r).await?);
    Ok(steps)
}

/// The bucket, created when missing (with its region's location constraint, which AWS
/// rejects in us-east-1).
async fn ensure_bucket(c: &Clients, r: &Resources) -> Result<Step, AwsError> {
    let bucket = format!("s3://{}", r.bucket);
    if bucket_exists(c, r).await? {
        return Ok(step(&bucket, "exists"));
    }
    let mut req = c.s3.create_bucket().bucket(&r.bucket);
    if r.region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(r.region.as_str()))
                .build(),
        );
    }
    req.send().await.map_err(fail("creating the bucket"))?;
    Ok(step(&bucket, "created"))
}

/// Public access blocked, default encryption, the TLS-only policy: one step saying all
/// three, and the bucket's customer-managed KMS key if its encryption names one (the
/// delivery policy must allow it).
async fn secure_bucket(c: &Clients, r: &Resources) -> Result<(Step, Option<String>), AwsError> {
    block_public_access(c, r).await?;
    let (encryption, kms_key) = ensure_encryption(c, r).await?;
    let tls = ensure_tls_only(c, r).await?;
    let s = step(
        format!("s3://{}", r.bucket),
        format!("public access blocked, {encryption}, {tls}"),
    );
    Ok((s, kms_key))
}

async fn block_public_access(c: &Clients, r: &Resources) -> Result<(), AwsError> {
    c.s3.put_public_access_block()
        .bucket(&r.bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(fail("blocking public access"))?;
    Ok(())
}

/// The bucket's default encryption rule, as (algorithm, KMS key id), or `None` without one.
async fn default_encryption(
    c: &Clients,
    r: &Resources,
) -> Result<Option<(String, Option<String>)>, AwsError> {
    match c.s3.get_bucket_encryption().bucket(&r.bucket).send().await {
        Ok(out) => Ok(out
            .server_side_encryption_configuration()
            .and_then(|conf| conf.rules().first())
            .and_then(|rule| rule.apply_server_side_encryption_by_default())
            .map(|d| {
                (
                    d.sse_algorithm().as_str().to_owned(),
                    d.kms_master_key_id().map(str::to_owned),
                )
            })),
        Err(e)
            if e.as_service_error().and_then(|s| s.meta().code())
                == Some("ServerSideEncryptionConfigurationNotFoundError") =>
        {
            Ok(None)
        }
        Err(e) => Err(fail("reading default encryption")(e)),
    }
}

/// Default encryption: an existing rule (SSE-KMS with the team's key, say) is kept, else
/// SSE-S3 is set. Returns what the bucket has, in words, and its KMS key if it is SSE-KMS.
async fn ensure_encryption(
    c: &Clients,
    r: &Resources,
) -> Result<(String, Option<String>), AwsError> {
    let existing = default_encryption(c, r).await?;
    let kms_key = existing
        .as_ref()
        .filter(|(alg, _)| alg.starts_with("aws:kms"))
        .and_then(|(_, key)| key.clone());
    let encryption = match existing {
        Some((alg, _)) => format!("default encryption {alg} kept"),
        None => {
            put_sse_s3(c, r).await?;
            "SSE-S3 default encryption".to_owned()
        }
    };
    Ok((encryption, kms_key))
}

async fn put_sse_s3(c: &Clients, r: &Resources) -> Result<(), AwsError> {
    let sse = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(fail("encryption rule"))?;
    c.s3.put_bucket_encryption()
        .bucket(&r.bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(sse)
                        .build(),
                )
                .build()
                .map_err(fail("encryption configuration"))?,
        )
        .send()
        .await
        .map_err(fail("setting default encryption"))?;
    Ok(())
}

/// The TLS-only statement added to the bucket policy (other statements kept), unless the
/// endpoint is a plain-HTTP emulator; what was done, in words.
async fn ensure_tls_only(c: &Clients, r: &Resources) -> Result<&'static str, AwsError> {
    if !r.tls_only {
        return Ok("no TLS-only policy (plain-HTTP emulator endpoint)");
    }
    let policy = match c.s3.get_bucket_policy().bucket(&r.bucket).send().await {
        Ok(out) => out.policy().map(str::to_owned),
        Err(e)
            if e.as_service_error().and_then(|s| s.meta().code()) == Some("NoSuchBucketPolicy") =>
        {
            None
        }
        Err(e) => return Err(fail("reading the bucket policy")(e)),
    };
    let wanted = with_tls_only(policy.as_deref(), &r.bucket)?;
    if policy.as_deref() != Some(wanted.as_str()) {
        c.s3.put_bucket_policy()
            .bucket(&r.bucket)
            .policy(&wanted)
            .send()
            .await
            .map_err(fail("setting the TLS-only bucket policy"))?;
    }
    Ok("TLS-only bucket policy")
}

/// The log group, created when missing; its retention set either way.
async fn ensure_log_group(c: &Clients, r: &Resources) -> Result<Step, AwsError> {
    let s = if log_group_exists(c, r).await? {
        step(&r.log_group, "log group exists")
    } else {
        c.logs
            .create_log_group()
            .log_group_name(&r.log_group)
            .send()
            .await
            .map_err(fail("creating the log group"))?;
        step(&r.log_group, "log group created")
    };
    c.logs
        .put_retention_policy()
        .log_group_name(&r.log_group)
        .retention_in_days(r.log_retention_days)
        .send()
        .await
        .map_err(fail("setting log retention"))?;
    Ok(s)
}

/// The log stream Firehose writes its delivery errors to, created when missing.
async fn ensure_log_stream(c: &Clients, r: &Resources) -> Result<Step, AwsError> {
    let resource = format!("{}/{}", r.log_group, r.log_stream);
    match c
        .logs
        .create_log_stream()
        .log_group_name(&r.log_group)
        .log_stream_name(&r.log_stream)
        .send()
        .await
    {
        Ok(_) => Ok(step(resource, "log stream created")),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception()) =>
        {
            Ok(step(resource, "log stream exists"))
        }
        Err(e) => Err(fail("creating the log stream")(e)),
    }
}

/// This account's id (the role's trust condition and the policy's log-stream ARN name it).
async fn account_id(c: &Clients) -> Result<String, AwsError> {
    Ok(c.sts
        .get_caller_identity()
        .send()
        .await
        .map_err(fail("reading the account id (sts:GetCallerIdentity)"))?
        .account()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| AwsError::Fatal("sts:GetCallerIdentity returned no account id".into()))?
        .to_owned())
}

/// The delivery role, created when missing; an existing one has its trust policy renewed
/// (an older role may lack the account condition). Returns its ARN and the step.
async fn ensure_role(
    c: &Clients,
    r: &Resources,
    account: &str,
) -> Result<(String, Step), AwsError> {
    if let Some(arn) = role_arn(c, r).await? {
        c.iam
            .update_assume_role_policy()
            .role_name(&r.role)
            .policy_document(trust_policy(account))
            .send()
            .await
            .map_err(fail("updating the role's trust policy"))?;
        return Ok((arn, step(&r.role, "role exists")));
    }
    let out = c
        .iam
        .create_role()
        .role_name(&r.role)
        .assume_role_policy_document(trust_policy(account))
        .description("flagship: lets Kinesis Firehose deliver tweets to S3")
        .send()
        .await
        .map_err(fail("creating the IAM role"))?;
    let s = step(&r.role, "role created");
    Ok((
        out.role().map(|x| x.arn().to_owned()).unwrap_or_default(),
        s,
    ))
}

/// The role's one inline policy ([`delivery_policy`]), put every time.
async fn put_delivery_policy(
    c: &Clients,
    r: &Resources,
    account: &str,
    kms_key: Option<&str>,
) -> Result<Step, AwsError> {
    c.iam
        .put_role_policy()
        .role_name(&r.role)
        .policy_name(POLICY_NAME)
        .policy_document(delivery_policy(r, account, kms_key))
        .send()
        .await
        .map_err(fail("attaching the delivery policy"))?;
    Ok(step(
        &r.role,
        format!(
            "inline policy {POLICY_NAME}: s3://{}/{}*, log stream {}",
            r.bucket, r.prefix, r.log_stream
        ),
    ))
}

/// The delivery stream, created when missing, delivering as the role `arn`.
async fn ensure_stream(c: &Clients, r: &Resources, arn: &str) -> Result<Step, AwsError> {
    if let Some(s) = stream_status(c, r).await? {
        return Ok(step(
            &r.stream,
            format!("delivery stream exists ({})", s.as_str()),
        ));
    }
    create_stream(c, r, destination(r, arn)?).await?;
    Ok(step(&r.stream, "delivery stream created"))
}

/// Where and how the stream delivers: the bucket and prefix (errors beside it), 5 MB / 60 s
/// buffering, delivery errors logged to the log stream.
fn destination(r: &Resources, arn: &str) -> Result<ExtendedS3DestinationConfiguration, AwsError> {
    ExtendedS3DestinationConfiguration::builder()
        .role_arn(arn)
        .bucket_arn(format!("arn:aws:s3:::{}", r.bucket))
        .prefix(&r.prefix)
        .error_output_prefix(r.error_prefix())
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(5)
                .interval_in_seconds(60)
                .build(),
        )
        .cloud_watch_logging_options(
            CloudWatchLoggingOptions::builder()
                .enabled(true)
                .log_group_name(&r.log_group)
                .log_stream_name(&r.log_stream)
                .build(),
        )
        .build()
        .map_err(fail("destination configuration"))
}

/// Creates the DirectPut stream. A new role takes a while to be usable by Firehose: retried
/// while AWS says so, for two minutes at most.
async fn create_stream(
    c: &Clients,
    r: &Resources,
    dest: ExtendedS3DestinationConfiguration,
) -> Result<(), AwsError> {
    let start = std::time::Instant::now();
    loop {
        let created = c
            .firehose
            .create_delivery_stream()
            .delivery_stream_name(&r.stream)
            .delivery_stream_type(DeliveryStreamType::DirectPut)
            .extended_s3_destination_configuration(dest.clone())
            .send()
            .await;
        match created {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_argument_exception())
                    && start.elapsed() < Duration::from_secs(120) =>
            {
                tracing::info!(
                    "role not assumable yet; retrying: {}",
                    aws_sdk_firehose::error::DisplayErrorContext(&e)
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(fail("creating the delivery stream")(e)),
        }
    }
}

/// Polls the stream until it is ACTIVE (ten minutes at most).
async fn wait_until_active(c: &Clients, r: &Resources) -> Result<Step, AwsError> {
    poll(
        "waiting for the delivery stream to be ACTIVE",
        Duration::from_secs(600),
        Duration::from_secs(2),
        || async { Ok(stream_status(c, r).await? == Some(DeliveryStreamStatus::Active)) },
    )
    .await?;
    Ok(step(&r.stream, "ACTIVE"))
}

/// What exists now.
pub async fn status(c: &Clients, r: &Resources) -> Result<Vec<Step>, AwsError> {
    Ok(vec![
        step(
            format!("s3://{}", r.bucket),
            if bucket_exists(c, r).await? {
                "exists"
            } else {
                "missing"
            },
        ),
        step(
            &r.log_group,
            if log_group_exists(c, r).await? {
                "exists"
            } else {
                "missing"
            },
        ),
        step(
            &r.role,
            if role_arn(c, r).await?.is_some() {
                "exists"
            } else {
                "missing"
            },
        ),
        step(
            &r.stream,
            stream_status(c, r)
                .await?
                .map_or("missing".to_owned(), |s| s.as_str().to_owned()),
        ),
    ])
}

/// Deletes in reverse order of creation and checks each deletion; the bucket (which holds
/// the data) only with `delete_bucket`, after emptying it.
pub async fn destroy(
    c: &Clients,
    r: &Resources,
    delete_bucket: bool,
) -> Result<Vec<Step>, AwsError> {
    Ok(vec![
        delete_stream(c, r).await?,
        delete_role(c, r).await?,
        delete_log_group(c, r).await?,
        remove_bucket(c, r, delete_bucket).await?,
    ])
}

/// The delivery stream, deleted and waited for until it is gone.
async fn delete_stream(c: &Clients, r: &Resources) -> Result<Step, AwsError> {
    if stream_status(c, r).await?.is_none() {
        return Ok(step(&r.stream, "absent"));
    }
    c.firehose
        .delete_delivery_stream()
        .delivery_stream_name(&r.stream)
        .send()
        .await
        .map_err(fail("deleting the delivery stream"))?;
    poll(
        "waiting for the delivery stream to go",
        Duration::from_secs(600),
        Duration::from_secs(2),
        || async { Ok(stream_status(c, r).await?.is_none()) },
    )
    .await?;
    Ok(step(&r.stream, "deleted (verified)"))
}

/// The delivery role and its inline policy.
async fn delete_role(c: &Clients, r: &Resources) -> Result<Step, AwsError> {
    if role_arn(c, r).await?.is_none() {
        return Ok(step(&r.role, "absent"));
    }
    match c
        .iam
        .delete_role_policy()
        .role_name(&r.role)
        .policy_name(POLICY_NAME)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) => {}
        Err(e) => return Err(fail("deleting the inline policy")(e)),
    }
    c.iam
        .delete_role()
        .role_name(&r.role)
        .send()
        .await
        .map_err(fail("deleting the role"))?;
    if role_arn(c, r).await?.is_some() {
        return Err(AwsError::Fatal(format!(
            "role {} still exists after deletion",
            r.role
        )));
    }
    Ok(step(&r.role, "deleted (verified)"))
}

/// The log group (with its log stream).
async fn delete_log_group(c: &Clients, r: &Resources) -> Result<Step, AwsError> {
    if !log_group_exists(c, r).await? {
        return Ok(step(&r.log_group, "absent"));
    }
    c.logs
        .delete_log_group()
        .log_group_name(&r.log_group)
        .send()
        .await
        .map_err(fail("deleting the log group"))?;
    if log_group_exists(c, r).await? {
        return Err(AwsError::Fatal(format!(
            "log group {} still exists after deletion",
            r.log_group
        )));
    }
    Ok(step(&r.log_group, "deleted (verified)"))
}

/// The bucket, emptied and deleted only when `delete_bucket`; otherwise kept and said so.
async fn remove_bucket(c: &Clients, r: &Resources, delete_bucket: bool) -> Result<Step, AwsError> {
    let bucket = format!("s3://{}", r.bucket);
    if !(delete_bucket && bucket_exists(c, r).await?) {
        return Ok(step(
            &bucket,
            if delete_bucket {
                "absent"
            } else {
                "kept (it holds the data; --delete-bucket to remove)"
            },
        ));
    }
    empty_bucket(c, r).await?;
    c.s3.delete_bucket()
        .bucket(&r.bucket)
        .send()
        .await
        .map_err(fail("deleting the bucket"))?;
    if bucket_exists(c, r).await? {
        return Err(AwsError::Fatal(format!(
            "{bucket} still exists after deletion"
        )));
    }
    Ok(step(&bucket, "emptied and deleted (verified)"))
}

/// Deletes every object of the bucket, a listing page at a time, until none is left.
async fn empty_bucket(c: &Clients, r: &Resources) -> Result<(), AwsError> {
    loop {
        let page =
            c.s3.list_objects_v2()
                .bucket(&r.bucket)
                .send()
                .await
                .map_err(fail("listing the bucket"))?;
        if page.contents().is_empty() {
            return Ok(());
        }
        for o in page.contents() {
            if let Some(k) = o.key() {
                c.s3.delete_object()
                    .bucket(&r.bucket)
                    .key(k)
                    .send()
                    .await
                    .map_err(fail("emptying the bucket"))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IAM's `*` / `?` wildcards in a resource (moto does not evaluate policies).
    fn glob(pattern: &str, s: &str) -> bool {
        match pattern.split_once('*') {
            None => {
                pattern.len() == s.len()
                    && pattern
                        .bytes()
                        .zip(s.bytes())
                        .all(|(p, c)| p == b'?' || p == c)
            }
            Some((head, tail)) => {
                s.len() >= head.len()
                    && glob(head, &s[..head.len()])
                    && (head.len()..=s.len()).any(|i| glob(tail, &s[i..]))
            }
        }
    }

    /// Whether an Allow statement grants `action` on `resource` (and the KMS condition's
    /// encryption context, when `context` is given).
    fn allows(policy: &str, action: &str, resource: &str, context: Option<&str>) -> bool {
        let v: serde_json::Value = serde_json::from_str(policy).unwrap();
        let list = |v: &serde_json::Value| -> Vec<String> {
            match v {
                serde_json::Value::Array(a) => {
                    a.iter().map(|s| s.as_str().unwrap().into()).collect()
                }
                serde_json::Value::String(s) => vec![s.clone()],
                _ => vec![],
            }
        };
        v["Statement"].as_array().unwrap().iter().any(|s| {
            s["Effect"] == "Allow"
                && list(&s["Action"]).iter().any(|a| a == action)
                && list(&s["Resource"]).iter().any(|r| glob(r, resource))
                && context.is_none_or(|c| {
                    list(&s["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"])
                        .iter()
                        .any(|p| glob(p, c))
                })
        })
    }

    #[test]
    fn the_delivery_role_may_write_where_firehose_puts_errors() {
        let r = Resources::new("b", "eu-west-1", "raw/", "s");
        let policy = delivery_policy(&r, "123456789012", Some("arn:aws:kms:eu-west-1:1:key/k"));
        let error_object = format!(
            "arn:aws:s3:::b/{}2026/01/01/00/s-1-x",
            r.error_prefix()
                .replace("!{firehose:error-output-type}", "processing-failed")
        );
        assert!(error_object.starts_with("arn:aws:s3:::b/raw-errors/"));
        for object in [
            "arn:aws:s3:::b/raw/2026/01/01/00/s-1-x",
            error_object.as_str(),
        ] {
            assert!(
                allows(&policy, "s3:PutObject", object, None),
                "{object}\n{policy}"
            );
            assert!(
                allows(
                    &policy,
                    "kms:GenerateDataKey",
                    "arn:aws:kms:eu-west-1:1:key/k",
                    Some(object)
                ),
                "{object}\n{policy}"
            );
        }
        // Nothing else in the bucket.
        for other in [
            "arn:aws:s3:::b/other/x",
            "arn:aws:s3:::b/rawx",
            "arn:aws:s3:::c/raw/x",
        ] {
            assert!(!allows(&policy, "s3:PutObject", other, None), "{other}");
        }
        assert!(glob("a*c?", "abbbcd") && !glob("a*c", "abd"));
    }
}
