//! The streaming host: one EC2 instance per mission (per delivery stream) running
//! `flagship ingest` into that mission's Firehose stream — the original's EC2 + Ansible step
//! as `flagship aws host create | status | update | destroy`.
//!
//! - **Files**: the streaming-host build (no libtorch) and the mission's config, uploaded to
//!   the mission's bucket under `flagship-host/<stream>/`; the instance pulls them at boot and
//!   on `update`.
//! - **Secrets**: the stream tokens the config names (`X_BEARER_TOKEN`, each Mastodon
//!   instance's variable) go to SSM Parameter Store as SecureString under
//!   `/flagship/<stream>/`, from this process's environment. The instance reads them when the
//!   service starts (an `ExecStartPre` writes a root-only file under `/run`); they are never
//!   in user-data, the config or a log. It reads **only the variables named** by this command
//!   ([`Host::tokens`], carried in user-data and in `update`'s SSM command, never read from
//!   the bucket or SSM): a writer of the parameter path cannot set `LD_PRELOAD` or
//!   `HTTPS_PROXY`.
//! - **Pinned files**: the instance installs the binary and the config only when their
//!   SHA-256 is the one this command uploaded (given in user-data and `update`'s command): a
//!   writer of the bucket prefix cannot swap either.
//! - **Role** `flagship-host-<stream>` (trusted by EC2) with one inline policy: put records to
//!   this mission's delivery stream, read its own objects and parameters, and the channels
//!   Session Manager needs — nothing of another mission's. Its instance profile, same name.
//! - **Security group** `flagship-host-<stream>`: no inbound rule at all; outbound HTTPS only
//!   (the AWS APIs, the stream endpoints). A shell is `aws ssm start-session`, not SSH.
//! - **Instance**: Amazon Linux 2023 (the AMI from AWS's public SSM parameter unless given),
//!   IMDSv2 required (hop limit 1), encrypted root volume, tagged `flagship:host = <stream>`;
//!   cloud-init user-data installs the `flagship` user, the ingest unit (`deploy/`, with a
//!   drop-in for this mission) and starts it.
//!
//! `create` is idempotent; `update` uploads new files and has SSM Run Command run the host's
//! update script (pull, restart); `destroy` deletes in reverse and verifies each deletion.
//! Everything is named and found by the stream, so a second mission's host in the same
//! account never touches the first's.

use std::path::Path;
use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    IpPermission, IpRange, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ssm::types::CommandInvocationStatus;

use crate::{AwsError, Clients, Resources, Step, fail, get_role, step};

/// The tag that marks a mission's host (its value: the delivery stream).
pub const HOST_TAG: &str = "flagship:host";

/// AWS's public parameter naming the current Amazon Linux 2023 AMI (x86-64, like the build).
pub const AMI_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

/// The most EC2 takes as user-data (16 KB, before base64).
const USER_DATA_LIMIT: usize = 16 * 1024;

/// The ingest unit, as `deploy/` ships it; the host adds a drop-in for its mission.
const INGEST_UNIT: &str = include_str!("../../../deploy/flagship-ingest.service");

/// A mission's streaming host: its names, from the mission's delivery stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub resources: Resources,
    /// Role, instance profile, security group and the instance's `Name`.
    pub name: String,
    pub instance_type: String,
    /// An AMI id; `None`: [`AMI_PARAMETER`].
    pub ami: Option<String>,
    /// Where the binary and the config go in the bucket (`flagship-host/<stream>/`).
    pub key_prefix: String,
    /// The mission's SSM parameter path (`/flagship/<stream>`).
    pub parameters: String,
    /// The token variables the service gets (`X_BEARER_TOKEN`, …): the config's, checked by
    /// [`check_token_names`]; any other parameter under the path is ignored.
    pub tokens: Vec<String>,
}

/// The SHA-256 (hex) of the binary and the config uploaded: the host installs nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    pub binary: String,
    pub config: String,
}

/// Variables that change how a program loads, resolves or connects, never a token's name.
const NOT_TOKENS: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "USER",
    "IFS",
    "ENV",
    "BASH_ENV",
    "TMPDIR",
    "TZ",
    "LANG",
    "GLIBC_TUNABLES",
    "MALLOC_CONF",
    "NO_PROXY",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
];

/// A token variable the host may set: an environment variable name (letters, digits, `_`)
/// that is none of the loader's, proxy, AWS or locale variables.
pub fn check_token_names(names: &[String]) -> Result<(), AwsError> {
    for n in names {
        let upper = n.to_ascii_uppercase();
        let shaped = n.bytes().next().is_some_and(|b| !b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let reserved = NOT_TOKENS.contains(&upper.as_str())
            || ["LD_", "DYLD_", "AWS_", "LC_", "BASH_FUNC", "SYSTEMD_"]
                .iter()
                .any(|p| upper.starts_with(p))
            || upper.contains("PROXY");
        if !shaped || reserved {
            return Err(AwsError::Fatal(format!(
                "{n:?} cannot be a token variable on the host (a name of letters, digits and `_`, not a loader, proxy, AWS or locale variable)"
            )));
        }
    }
    Ok(())
}

impl Host {
    /// IAM is global: the names carry the region too, so the same stream name in two regions
    /// gets two hosts. A name over IAM's 64 characters keeps 55 and a hash of the whole.
    pub fn new(resources: Resources) -> Host {
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        };
        let stream = safe(&resources.stream);
        let full = format!("flagship-host-{}-{stream}", safe(&resources.region));
        let name = if full.len() <= 64 {
            full
        } else {
            use sha2::Digest;
            let hash: String = sha2::Sha256::digest(full.as_bytes())[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{}-{hash}", &full[..55])
        };
        Host {
            name,
            instance_type: "t3.micro".into(),
            ami: None,
            key_prefix: format!("flagship-host/{stream}/"),
            parameters: format!("/flagship/{stream}"),
            tokens: Vec::new(),
            resources,
        }
    }

    /// The value of [`HOST_TAG`] on this host's resources: region and stream.
    pub fn tag(&self) -> String {
        format!("{}/{}", self.resources.region, self.resources.stream)
    }

    pub fn binary_key(&self) -> String {
        format!("{}flagship", self.key_prefix)
    }

    pub fn config_key(&self) -> String {
        format!("{}flagship.toml", self.key_prefix)
    }

    /// The parameter a token's environment variable is kept under, named exactly like it
    /// (`/flagship/<stream>/X_BEARER_TOKEN`): the host sets the variable of that name.
    pub fn parameter(&self, env: &str) -> String {
        format!("{}/{env}", self.parameters)
    }
}

/// What the host runs: the streaming-host build and the mission's config.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    pub binary: &'a Path,
    pub config: &'a Path,
}

/// EC2 may assume the host's role.
pub fn trust_policy() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
    .to_string()
}

/// The host role's one inline policy: its own stream, objects and parameters, and Session
/// Manager's channels (the actions AWS's "custom instance profile for Session Manager"
/// lists, not the managed policy, which reads every parameter in the account).
pub fn role_policy(h: &Host, account: &str) -> String {
    let r = &h.resources;
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DeliverToItsStream",
                "Effect": "Allow",
                "Action": ["firehose:PutRecordBatch", "firehose:PutRecord", "firehose:DescribeDeliveryStream"],
                "Resource": format!("arn:aws:firehose:{}:{account}:deliverystream/{}", r.region, r.stream)
            },
            {
                "Sid": "ReadItsFiles",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": format!("arn:aws:s3:::{}/{}*", r.bucket, h.key_prefix)
            },
            {
                "Sid": "ReadItsSecrets",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:GetParameters"],
                "Resource": [
                    format!("arn:aws:ssm:{}:{account}:parameter{}", r.region, h.parameters),
                    format!("arn:aws:ssm:{}:{account}:parameter{}/*", r.region, h.parameters)
                ]
            },
            {
                "Sid": "SessionManager",
                "Effect": "Allow",
                "Action": [
                    "ssm:UpdateInstanceInformation",
                    "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
                    "ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage",
                    "ec2messages:FailMessage", "ec2messages:GetEndpoint",
                    "ec2messages:GetMessages", "ec2messages:SendReply"
                ],
                "Resource": "*"
            }
        ]
    })
    .to_string()
}

/// The drop-in that makes `deploy/flagship-ingest.service` this mission's: its stream, its
/// region, and the tokens from SSM (read as root before the service starts).
pub fn ingest_dropin(h: &Host) -> String {
    format!(
        "# Written by `flagship aws host create` for the stream `{stream}`.\n\
         [Service]\n\
         Environment=AWS_REGION={region}\n\
         EnvironmentFile=\n\
         EnvironmentFile=-/run/flagship/secrets.env\n\
         ExecStartPre=+/usr/local/lib/flagship/secrets\n\
         ExecStart=\n\
         ExecStart=/usr/local/bin/flagship --config /etc/flagship/flagship.toml ingest run --sink firehose --stream {stream} --spill /var/lib/flagship/ingest-spill.jsonl --drain-timeout 60s\n",
        stream = h.resources.stream,
        region = h.resources.region
    )
}

/// `/usr/local/lib/flagship/update BINARY_SHA256 CONFIG_SHA256 [TOKEN_VARIABLE…]`: pull the
/// binary and the config, install each only if its SHA-256 is the one given (what `create` /
/// `update` uploaded, passed in user-data or the SSM command, never read from the bucket),
/// record the token variables the secrets script may export, restart the service.
pub fn update_script(h: &Host) -> String {
    let at = format!("s3://{}/{}", h.resources.bucket, h.key_prefix);
    format!(
        r#"#!/bin/bash
# Pulls the binary and the config from S3, checks each against the SHA-256 it was given, and
# restarts ingest: run by cloud-init at the first boot and by `flagship aws host update` (SSM
# Run Command). Usage: update BINARY_SHA256 CONFIG_SHA256 [TOKEN_VARIABLE...]
set -euo pipefail
export LC_ALL=C
export AWS_REGION={region}
if [ $# -lt 2 ]; then echo "usage: $0 BINARY_SHA256 CONFIG_SHA256 [TOKEN_VARIABLE...]" >&2; exit 2; fi
want_binary=$1 want_config=$2
shift 2
for want in "$want_binary" "$want_config"; do
  [[ $want =~ ^[0-9a-f]{{64}}$ ]] || {{ echo "flagship update: $want is not a SHA-256" >&2; exit 2; }}
done
for name in "$@"; do
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || {{ echo "flagship update: $name is not a variable name" >&2; exit 2; }}
  case ${{name^^}} in
    LD_*|DYLD_*|AWS_*|LC_*|*PROXY*|PATH|HOME|BASH_ENV|GLIBC_TUNABLES|SSL_CERT_*)
      echo "flagship update: $name cannot be a token variable" >&2; exit 2 ;;
  esac
done
# $1: what, $2: the downloaded file, $3: the SHA-256 it must have.
check() {{
  local got
  got=$(sha256sum "$2" | cut -d' ' -f1)
  if [ "$got" != "$3" ]; then
    rm -f "$2"
    echo "flagship update: the $1 in S3 has SHA-256 $got, not the $3 uploaded: not installed" >&2
    exit 3
  fi
}}
aws s3 cp "{at}flagship" /usr/local/bin/flagship.new --only-show-errors
check binary /usr/local/bin/flagship.new "$want_binary"
aws s3 cp "{at}flagship.toml" /etc/flagship/flagship.toml.new --only-show-errors
check config /etc/flagship/flagship.toml.new "$want_config"
install -m 0755 /usr/local/bin/flagship.new /usr/local/bin/flagship
rm -f /usr/local/bin/flagship.new
install -d -o root -g flagship -m 0750 /etc/flagship
install -o root -g flagship -m 0640 /etc/flagship/flagship.toml.new /etc/flagship/flagship.toml
rm -f /etc/flagship/flagship.toml.new
printf '%s\n' "$@" > /etc/flagship/secrets.names.new
chmod 0600 /etc/flagship/secrets.names.new
mv /etc/flagship/secrets.names.new /etc/flagship/secrets.names
systemctl daemon-reload
if systemctl is-enabled --quiet flagship-ingest; then systemctl restart flagship-ingest; fi
"#,
        region = h.resources.region
    )
}

/// `/usr/local/lib/flagship/secrets` (`ExecStartPre`, as root): the parameters of the token
/// variables the update script recorded (`/etc/flagship/secrets.names`) →
/// `/run/flagship/secrets.env`, readable by root only (systemd reads it before dropping to
/// the `flagship` user). Any other parameter under the path is never read; a value with a
/// character no token has (space, quote, backslash, a control character) is refused.
pub fn secrets_script(h: &Host) -> String {
    format!(
        r#"#!/bin/bash
# The named token parameters → /run/flagship/secrets.env (0600, root; systemd reads it as the
# service starts). /flagship/<stream>/X_BEARER_TOKEN → X_BEARER_TOKEN, for the names in
# /etc/flagship/secrets.names only (written by the update script from its arguments).
set -euo pipefail
umask 077
export LC_ALL=C
export AWS_REGION={region}
install -d -m 0700 /run/flagship
: > /run/flagship/secrets.env.new
names=/etc/flagship/secrets.names
[ -f "$names" ] || names=/dev/null
while read -r name; do
  [ -n "$name" ] || continue
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || {{ echo "flagship secrets: $name is not a variable name" >&2; exit 1; }}
  value=$(aws ssm get-parameters --names "{path}/$name" --with-decryption \
    --query 'Parameters[].Value' --output text)
  [ -n "$value" ] || continue
  case $value in
    *[![:graph:]]*|*[\"\'\\\`\$]*)
      echo "flagship secrets: {path}/$name holds a character no token has: refused" >&2
      exit 1 ;;
  esac
  printf '%s=%s\n' "$name" "$value" >> /run/flagship/secrets.env.new
done < "$names"
mv /run/flagship/secrets.env.new /run/flagship/secrets.env
"#,
        region = h.resources.region,
        path = h.parameters
    )
}

/// The update script's command line: the pinned hashes and the token variables (all checked:
/// hex digits and variable names, nothing a shell would read otherwise).
pub fn update_command(h: &Host, pins: &Pins) -> String {
    let mut c = format!(
        "/usr/local/lib/flagship/update {} {}",
        pins.binary, pins.config
    );
    for n in &h.tokens {
        c.push(' ');
        c.push_str(n);
    }
    c
}

/// The files user-data installs: path, mode, contents.
pub fn host_files(h: &Host) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("/usr/local/lib/flagship/update", "0755", update_script(h)),
        ("/usr/local/lib/flagship/secrets", "0755", secrets_script(h)),
        (
            "/etc/systemd/system/flagship-ingest.service",
            "0644",
            INGEST_UNIT.to_owned(),
        ),
        (
            "/etc/systemd/system/flagship-ingest.service.d/host.conf",
            "0644",
            ingest_dropin(h),
        ),
    ]
}

/// The cloud-init user-data: a shell script that installs [`host_files`] and starts ingest
/// with the files `pins` names. No secret is in it (the tokens are read from SSM by the
/// service).
pub fn user_data(h: &Host, pins: &Pins) -> Result<String, AwsError> {
    check_token_names(&h.tokens)?;
    let mut s = format!(
        "#!/bin/bash\n\
         # flagship streaming host for the stream `{}` (written by `flagship aws host create`).\n\
         # No secrets here: the service reads its tokens from SSM Parameter Store at start.\n\
         set -euo pipefail\n\
         id -u flagship >/dev/null 2>&1 || useradd --system --home-dir /var/lib/flagship --shell /sbin/nologin flagship\n\
         install -d -o root -g flagship -m 0750 /etc/flagship\n\
         install -d -m 0755 /usr/local/lib/flagship /etc/systemd/system/flagship-ingest.service.d\n",
        h.resources.stream
    );
    for (path, mode, text) in host_files(h) {
        let end = "FLAGSHIP_EOF";
        if text.contains(end) {
            return Err(AwsError::Fatal(format!(
                "{path} contains the here-document marker {end}"
            )));
        }
        s.push_str(&format!(
            "cat > {path} <<'{end}'\n{text}{}{end}\nchmod {mode} {path}\n",
            if text.ends_with('\n') { "" } else { "\n" }
        ));
    }
    // Enabled first, so a reboot starts it even if this first pull fails; the pull is
    // retried while the instance role's credentials settle.
    s.push_str(&format!(
        "systemctl daemon-reload\n\
         systemctl enable flagship-ingest\n\
         for try in 1 2 3 4 5 6 7 8 9 10; do\n\
         \x20 {} && break\n\
         \x20 echo \"flagship: pull $try failed; retrying in 30 s\" >&2; sleep 30\n\
         done\n\
         systemctl start flagship-ingest\n",
        update_command(h, pins)
    ));
    if s.len() > USER_DATA_LIMIT {
        return Err(AwsError::Fatal(format!(
            "user-data is {} bytes, over EC2's {USER_DATA_LIMIT}",
            s.len()
        )));
    }
    Ok(s)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = ((c[0] as u32) << 16)
            | ((*c.get(1).unwrap_or(&0) as u32) << 8)
            | (*c.get(2).unwrap_or(&0) as u32);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn name_filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// The mission's instances that are not terminated (`shutting-down` too when `all`).
async fn find_instances(
    c: &Clients,
    h: &Host,
    all: bool,
) -> Result<Vec<aws_sdk_ec2::types::Instance>, AwsError> {
    let mut states = Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .values("stopping")
        .values("stopped");
    if all {
        states = states.values("shutting-down");
    }
    let out = c
        .ec2
        .describe_instances()
        .filters(name_filter(&format!("tag:{HOST_TAG}"), &h.tag()))
        .filters(states.build())
        .send()
        .await
        .map_err(fail("ec2 DescribeInstances"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect())
}

/// The account's default VPC (where the host and its group live).
async fn default_vpc(c: &Clients) -> Result<String, AwsError> {
    c.ec2
        .describe_vpcs()
        .filters(name_filter("is-default", "true"))
        .send()
        .await
        .map_err(fail("ec2 DescribeVpcs"))?
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id().map(str::to_owned))
        .ok_or_else(|| {
            AwsError::Fatal("this region has no default VPC (the host is launched in it)".into())
        })
}

/// The mission's security group id in the default VPC, if it exists.
async fn find_group(c: &Clients, h: &Host, vpc: &str) -> Result<Option<String>, AwsError> {
    let out = c
        .ec2
        .describe_security_groups()
        .filters(name_filter("group-name", &h.name))
        .filters(name_filter("vpc-id", vpc))
        .send()
        .await
        .map_err(fail("ec2 DescribeSecurityGroups"))?;
    Ok(out
        .security_groups()
        .first()
        .and_then(|g| g.group_id().map(str::to_owned)))
}

async fn account(c: &Clients) -> Result<String, AwsError> {
    c.sts
        .get_caller_identity()
        .send()
        .await
        .map_err(fail("sts GetCallerIdentity"))?
        .account()
        .map(str::to_owned)
        .ok_or_else(|| AwsError::Fatal("sts GetCallerIdentity: no account".into()))
}

async fn get_profile(
    c: &Clients,
    h: &Host,
) -> Result<Option<aws_sdk_iam::types::InstanceProfile>, AwsError> {
    match c
        .iam
        .get_instance_profile()
        .instance_profile_name(&h.name)
        .send()
        .await
    {
        Ok(p) => Ok(p.instance_profile().cloned()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(fail("iam GetInstanceProfile")(e)),
    }
}

/// An object's size and `sha256` metadata, or `None` when S3 says there is none.
async fn head(c: &Clients, h: &Host, key: &str) -> Result<Option<(i64, Option<String>)>, AwsError> {
    match c
        .s3
        .head_object()
        .bucket(&h.resources.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(o) => Ok(Some((
            o.content_length().unwrap_or(0),
            o.metadata().and_then(|m| m.get("sha256")).cloned(),
        ))),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(fail("s3 HeadObject")(e)),
    }
}

/// The mission's parameters: (name, type).
async fn parameters(c: &Clients, h: &Host) -> Result<Vec<(String, String)>, AwsError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .ssm
            .get_parameters_by_path()
            .path(&h.parameters)
            .set_next_token(token)
            .send()
            .await
            .map_err(fail("ssm GetParametersByPath"))?;
        for p in page.parameters() {
            out.push((
                p.name().unwrap_or_default().to_owned(),
                p.r#type().map_or("?", |t| t.as_str()).to_owned(),
            ));
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The highest `GLIBC_2.N` a Linux binary asks for (its symbol versions), if any.
pub fn glibc_needed(binary: &[u8]) -> Option<u32> {
    let tag = b"GLIBC_2.";
    let mut best = None;
    let mut i = 0;
    while let Some(at) = binary[i..].windows(tag.len()).position(|w| w == tag) {
        let start = i + at + tag.len();
        let digits: String = binary[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        if let Ok(n) = digits.parse::<u32>() {
            best = best.max(Some(n));
        }
        i = start;
    }
    best
}

/// Amazon Linux 2023's glibc is 2.34: a binary built against a newer one does not start there.
const AL2023_GLIBC_MINOR: u32 = 34;

/// Uploads `bytes` (read from `path`) to `key` unless the object there has the same bytes
/// (its `sha256` metadata, which this function writes). Encrypted with S3's own keys (SSE-S3),
/// so the host role needs no KMS grant even when the bucket's default is a customer key.
async fn upload(
    c: &Clients,
    h: &Host,
    path: &Path,
    bytes: Vec<u8>,
    key: &str,
) -> Result<(Step, String), AwsError> {
    let sha = sha256_hex(&bytes);
    let bucket = &h.resources.bucket;
    let resource = format!("s3://{bucket}/{key}");
    if let Some((_, Some(old))) = head(c, h, key).await?
        && old == sha
    {
        return Ok((step(resource, "unchanged"), sha));
    }
    c.s3.put_object()
        .bucket(bucket)
        .key(key)
        .metadata("sha256", &sha)
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .body(bytes.into())
        .send()
        .await
        .map_err(fail("s3 PutObject"))?;
    let done = step(
        resource,
        format!("uploaded from {} (sha256 {})", path.display(), &sha[..12]),
    );
    Ok((done, sha))
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, AwsError> {
    std::fs::read(path).map_err(|e| AwsError::Fatal(format!("cannot read {}: {e}", path.display())))
}

/// The binary must start on the host: refused before anything is changed when it asks for a
/// newer glibc than Amazon Linux 2023's (with the default AMI).
fn check_binary(h: &Host, path: &Path, bytes: &[u8]) -> Result<(), AwsError> {
    if h.ami.is_none()
        && let Some(n) = glibc_needed(bytes)
        && n > AL2023_GLIBC_MINOR
    {
        return Err(AwsError::Fatal(format!(
            "{} needs glibc 2.{n} (GLIBC_2.{n} symbols) but Amazon Linux 2023 has 2.{AL2023_GLIBC_MINOR}: build it there (e.g. in an `amazonlinux:2023` container) or pass --ami for a newer distribution",
            path.display()
        )));
    }
    Ok(())
}

/// Uploads the binary and the config; their hashes are what the host will accept.
async fn upload_files(
    c: &Clients,
    h: &Host,
    files: Files<'_>,
) -> Result<(Vec<Step>, Pins), AwsError> {
    check_token_names(&h.tokens)?;
    let binary = read(files.binary)?;
    check_binary(h, files.binary, &binary)?;
    let (b, binary) = upload(c, h, files.binary, binary, &h.binary_key()).await?;
    let (k, config) = upload(c, h, files.config, read(files.config)?, &h.config_key()).await?;
    Ok((vec![b, k], Pins { binary, config }))
}

/// Creates (or finds) everything the mission's host needs, then the instance.
/// `secrets`: (environment variable, value) pairs stored as SecureString parameters.
pub async fn create(
    c: &Clients,
    h: &Host,
    files: Files<'_>,
    secrets: &[(String, String)],
) -> Result<Vec<Step>, AwsError> {
    check_secrets(h, secrets)?;
    let account = account(c).await?;
    require_delivery_stream(c, h).await?;
    let role = own_role(c, h).await?;
    let (mut steps, pins) = upload_files(c, h, files).await?;
    steps.extend(store_secrets(c, h, secrets).await?);
    steps.push(ensure_role(c, h, role.is_some(), &account).await?);
    steps.push(ensure_instance_profile(c, h).await?);
    let (group, group_step) = ensure_group(c, h).await?;
    steps.push(group_step);
    steps.push(ensure_instance(c, h, &group, &pins).await?);
    Ok(steps)
}

/// The delivery stream is `flagship aws create`'s: the host only puts to it, and is refused
/// without it.
async fn require_delivery_stream(c: &Clients, h: &Host) -> Result<(), AwsError> {
    let r = &h.resources;
    c.firehose
        .describe_delivery_stream()
        .delivery_stream_name(&r.stream)
        .send()
        .await
        .map_err(|e| {
            AwsError::Fatal(format!(
                "delivery stream {}: {} (create it first: `flagship aws create --bucket {} --stream {}`)",
                r.stream,
                aws_sdk_s3::error::DisplayErrorContext(&e),
                r.bucket,
                r.stream
            ))
        })?;
    Ok(())
}

/// The host's role if it exists. A role of this name made for another host (a long name's
/// hash collided, or by hand) is never taken over: refused before anything is changed.
async fn own_role(c: &Clients, h: &Host) -> Result<Option<aws_sdk_iam::types::Role>, AwsError> {
    let role = get_role(c, &h.name).await?;
    if let Some(role) = &role {
        let theirs = role
            .tags()
            .iter()
            .find(|t| t.key() == HOST_TAG)
            .map(|t| t.value().to_owned());
        if theirs.as_deref() != Some(h.tag().as_str()) {
            return Err(AwsError::Fatal(format!(
                "role {} exists but is not this host's ({HOST_TAG} = {:?}, expected {:?}): nothing changed",
                h.name,
                theirs,
                h.tag()
            )));
        }
    }
    Ok(role)
}

/// Each secret is one of the host's token variables, with a value the secrets script takes
/// (printable ASCII without spaces, quotes, backslashes or `$`): refused before any change.
fn check_secrets(h: &Host, secrets: &[(String, String)]) -> Result<(), AwsError> {
    check_token_names(&h.tokens)?;
    for (env, value) in secrets {
        if !h.tokens.contains(env) {
            return Err(AwsError::Fatal(format!(
                "${env} is not among the host's token variables ({})",
                h.tokens.join(", ")
            )));
        }
        let odd = |b: u8| !b.is_ascii_graphic() || b"\"'\\`$".contains(&b);
        if value.bytes().any(odd) {
            return Err(AwsError::Fatal(format!(
                "${env} holds a space, quote, backslash, `$` or a control character: no token does (the host would refuse it)"
            )));
        }
    }
    Ok(())
}

/// Each (environment variable, value) as a SecureString parameter, overwritten.
async fn store_secrets(
    c: &Clients,
    h: &Host,
    secrets: &[(String, String)],
) -> Result<Vec<Step>, AwsError> {
    let mut steps = Vec::new();
    for (env, value) in secrets {
        let name = h.parameter(env);
        c.ssm
            .put_parameter()
            .name(&name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .description(format!(
                "flagship: {env} for the stream {}",
                h.resources.stream
            ))
            .send()
            .await
            .map_err(fail("ssm PutParameter"))?;
        steps.push(step(
            format!("ssm {name}"),
            format!("stored from ${env} (SecureString)"),
        ));
    }
    Ok(steps)
}

/// The host's role (created, tagged, unless it `exists`) and its inline policy, put every
/// time.
async fn ensure_role(c: &Clients, h: &Host, exists: bool, account: &str) -> Result<Step, AwsError> {
    if !exists {
        c.iam
            .create_role()
            .role_name(&h.name)
            .assume_role_policy_document(trust_policy())
            .description(format!(
                "flagship streaming host of the stream {}",
                h.resources.stream
            ))
            .tags(
                aws_sdk_iam::types::Tag::builder()
                    .key(HOST_TAG)
                    .value(h.tag())
                    .build()
                    .map_err(|e| AwsError::Fatal(e.to_string()))?,
            )
            .send()
            .await
            .map_err(fail("iam CreateRole"))?;
    }
    c.iam
        .put_role_policy()
        .role_name(&h.name)
        .policy_name("flagship-host")
        .policy_document(role_policy(h, account))
        .send()
        .await
        .map_err(fail("iam PutRolePolicy"))?;
    Ok(step(
        format!("iam role {}", h.name),
        if exists {
            "exists (policy set)"
        } else {
            "created"
        },
    ))
}

/// The instance profile of the same name, created when missing, holding the role.
async fn ensure_instance_profile(c: &Clients, h: &Host) -> Result<Step, AwsError> {
    let profile = match get_profile(c, h).await? {
        Some(p) => Some(p),
        None => c
            .iam
            .create_instance_profile()
            .instance_profile_name(&h.name)
            .send()
            .await
            .map_err(fail("iam CreateInstanceProfile"))?
            .instance_profile()
            .cloned(),
    };
    let has_role = profile
        .as_ref()
        .is_some_and(|p| p.roles().iter().any(|x| x.role_name() == h.name));
    if !has_role {
        c.iam
            .add_role_to_instance_profile()
            .instance_profile_name(&h.name)
            .role_name(&h.name)
            .send()
            .await
            .map_err(fail("iam AddRoleToInstanceProfile"))?;
    }
    Ok(step(
        format!("iam instance profile {}", h.name),
        if has_role {
            "exists"
        } else {
            "created with its role"
        },
    ))
}

/// The security group in the default VPC, created when missing, with nothing in and HTTPS
/// out ([`lock_down_group`]). Returns its id and the step.
async fn ensure_group(c: &Clients, h: &Host) -> Result<(String, Step), AwsError> {
    let vpc = default_vpc(c).await?;
    let (group, group_new) = match find_group(c, h, &vpc).await? {
        Some(g) => (g, false),
        None => (create_group(c, h, &vpc).await?, true),
    };
    let removed = lock_down_group(c, &group).await?;
    let s = step(
        format!("ec2 security group {} ({group})", h.name),
        format!(
            "{}: no inbound rule{}, outbound tcp/443 only",
            if group_new { "created" } else { "exists" },
            if removed == 0 {
                String::new()
            } else {
                format!(" ({removed} removed)")
            }
        ),
    );
    Ok((group, s))
}

async fn create_group(c: &Clients, h: &Host, vpc: &str) -> Result<String, AwsError> {
    c.ec2
        .create_security_group()
        .group_name(&h.name)
        .vpc_id(vpc)
        .description(format!(
            "flagship host of {}: no inbound, HTTPS out",
            h.resources.stream
        ))
        .tag_specifications(tags(ResourceType::SecurityGroup, h))
        .send()
        .await
        .map_err(fail("ec2 CreateSecurityGroup"))?
        .group_id()
        .map(str::to_owned)
        .ok_or_else(|| AwsError::Fatal("ec2 CreateSecurityGroup: no id".into()))
}

/// Revokes every inbound rule and every outbound rule but HTTPS out, then authorizes HTTPS
/// out if missing. Returns how many inbound rules were removed.
async fn lock_down_group(c: &Clients, group: &str) -> Result<usize, AwsError> {
    let (inbound, outbound) = group_rules(c, group).await?;
    if !inbound.is_empty() {
        // Revoked as described (IPv6 ranges, prefix lists, other groups included).
        c.ec2
            .revoke_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(inbound.clone()))
            .send()
            .await
            .map_err(fail("ec2 RevokeSecurityGroupIngress"))?;
    }
    let other_out: Vec<IpPermission> = outbound
        .iter()
        .filter(|p| !is_https_out(p))
        .cloned()
        .collect();
    if !other_out.is_empty() {
        c.ec2
            .revoke_security_group_egress()
            .group_id(group)
            .set_ip_permissions(Some(other_out))
            .send()
            .await
            .map_err(fail("ec2 RevokeSecurityGroupEgress"))?;
    }
    if !outbound.iter().any(is_https_out) {
        c.ec2
            .authorize_security_group_egress()
            .group_id(group)
            .ip_permissions(https_out())
            .send()
            .await
            .map_err(fail("ec2 AuthorizeSecurityGroupEgress"))?;
    }
    Ok(inbound.len())
}

/// The mission's instance: an existing one is left as it is, else one is launched in
/// `group`.
async fn ensure_instance(
    c: &Clients,
    h: &Host,
    group: &str,
    pins: &Pins,
) -> Result<Step, AwsError> {
    if let Some(i) = find_instances(c, h, false).await?.first() {
        return Ok(step(
            format!("ec2 instance {}", i.instance_id().unwrap_or("?")),
            format!("exists ({})", state_of(i)),
        ));
    }
    let ami = host_ami(c, h).await?;
    let user_data = base64(user_data(h, pins)?.as_bytes());
    let instance = run_instance(c, h, group, &ami, &user_data).await?;
    Ok(step(
        format!("ec2 instance {}", instance.instance_id().unwrap_or("?")),
        format!(
            "launched ({}, {ami}, {}, IMDSv2 required)",
            state_of(&instance),
            h.instance_type
        ),
    ))
}

/// The host's AMI: the one given, or the current Amazon Linux 2023 from [`AMI_PARAMETER`].
async fn host_ami(c: &Clients, h: &Host) -> Result<String, AwsError> {
    match &h.ami {
        Some(a) => Ok(a.clone()),
        None => c
            .ssm
            .get_parameter()
            .name(AMI_PARAMETER)
            .send()
            .await
            .map_err(fail("ssm GetParameter (the Amazon Linux 2023 AMI)"))?
            .parameter()
            .and_then(|p| p.value())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::Fatal(format!("{AMI_PARAMETER}: no value"))),
    }
}

/// Launches the instance. A new instance profile takes a while (up to a couple of minutes)
/// to be usable by EC2: that error alone is retried, for three minutes at most.
async fn run_instance(
    c: &Clients,
    h: &Host,
    group: &str,
    ami: &str,
    user_data: &str,
) -> Result<aws_sdk_ec2::types::Instance, AwsError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut wait = Duration::from_millis(500);
    loop {
        let run = c
            .ec2
            .run_instances()
            .image_id(ami)
            .instance_type(InstanceType::from(h.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(&h.name)
                    .build(),
            )
            .security_group_ids(group)
            .user_data(user_data)
            .metadata_options(imdsv2_only())
            .block_device_mappings(encrypted_root())
            .tag_specifications(tags(ResourceType::Instance, h))
            .tag_specifications(tags(ResourceType::Volume, h))
            .send()
            .await;
        match run {
            Ok(out) => {
                return out
                    .instances()
                    .first()
                    .cloned()
                    .ok_or_else(|| AwsError::Fatal("ec2 RunInstances: no instance".into()));
            }
            Err(e) => {
                let text = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)).to_lowercase();
                let profile_not_ready =
                    text.contains("instance profile") || text.contains("iaminstanceprofile");
                if !profile_not_ready || std::time::Instant::now() + wait > deadline {
                    return Err(AwsError::Fatal(format!(
                        "ec2 RunInstances: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )));
                }
                tracing::info!("the instance profile is not usable yet; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(20));
            }
        }
    }
}

/// Instance metadata with IMDSv2 session tokens required and a hop limit of 1.
fn imdsv2_only() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_put_response_hop_limit(1)
        .build()
}

/// An encrypted 8 GB root volume, deleted with the instance.
fn encrypted_root() -> BlockDeviceMapping {
    BlockDeviceMapping::builder()
        .device_name("/dev/xvda")
        .ebs(
            EbsBlockDevice::builder()
                .encrypted(true)
                .volume_size(8)
                .delete_on_termination(true)
                .build(),
        )
        .build()
}

fn tags(kind: ResourceType, h: &Host) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("Name").value(&h.name).build())
        .tags(Tag::builder().key(HOST_TAG).value(h.tag()).build())
        .build()
}

fn https_out() -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build()
}

/// Exactly TCP 443 to anywhere over IPv4, and nothing else in the rule.
fn is_https_out(p: &IpPermission) -> bool {
    p.ip_protocol() == Some("tcp")
        && p.from_port() == Some(443)
        && p.to_port() == Some(443)
        && p.ip_ranges().len() == 1
        && p.ip_ranges()[0].cidr_ip() == Some("0.0.0.0/0")
        && p.ipv6_ranges().is_empty()
        && p.prefix_list_ids().is_empty()
        && p.user_id_group_pairs().is_empty()
}

/// A group's (inbound, outbound) rules, as described.
async fn group_rules(
    c: &Clients,
    group: &str,
) -> Result<(Vec<IpPermission>, Vec<IpPermission>), AwsError> {
    let out = c
        .ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .map_err(fail("ec2 DescribeSecurityGroups"))?;
    let g = out
        .security_groups()
        .first()
        .ok_or_else(|| AwsError::Fatal(format!("security group {group} vanished")))?;
    Ok((
        g.ip_permissions().to_vec(),
        g.ip_permissions_egress().to_vec(),
    ))
}

fn state_of(i: &aws_sdk_ec2::types::Instance) -> String {
    i.state()
        .and_then(|s| s.name())
        .map_or("unknown".into(), |n| n.as_str().to_owned())
}

/// What exists of the mission's host, and how it is set.
pub async fn status(c: &Clients, h: &Host) -> Result<Vec<Step>, AwsError> {
    let r = &h.resources;
    let mut steps = Vec::new();
    for key in [h.binary_key(), h.config_key()] {
        let state = match head(c, h, &key).await? {
            Some((size, _)) => format!("exists ({size} bytes)"),
            None => "missing".into(),
        };
        steps.push(step(format!("s3://{}/{key}", r.bucket), state));
    }
    for (name, kind) in parameters(c, h).await? {
        steps.push(step(format!("ssm {name}"), format!("exists ({kind})")));
    }
    let role = if get_role(c, &h.name).await?.is_some() {
        "exists"
    } else {
        "missing"
    };
    steps.push(step(format!("iam role {}", h.name), role));
    let profile = if get_profile(c, h).await?.is_some() {
        "exists"
    } else {
        "missing"
    };
    steps.push(step(format!("iam instance profile {}", h.name), profile));
    let vpc = default_vpc(c).await?;
    match find_group(c, h, &vpc).await? {
        Some(g) => {
            let (inbound, outbound) = group_rules(c, &g).await?;
            steps.push(step(
                format!("ec2 security group {} ({g})", h.name),
                format!(
                    "exists: {} inbound rules{}, {} outbound",
                    inbound.len(),
                    if inbound.is_empty() {
                        ""
                    } else {
                        " (expected none: run create)"
                    },
                    outbound.len()
                ),
            ));
        }
        None => steps.push(step(format!("ec2 security group {}", h.name), "missing")),
    }
    let instances = find_instances(c, h, false).await?;
    for i in &instances {
        let imds = i
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map_or("?", |t| t.as_str());
        steps.push(step(
            format!("ec2 instance {}", i.instance_id().unwrap_or("?")),
            format!(
                "{} ({}; IMDSv2 tokens {imds}; profile {})",
                state_of(i),
                i.instance_type().map_or("?", |t| t.as_str()),
                i.iam_instance_profile()
                    .and_then(|p| p.arn())
                    .unwrap_or("none")
            ),
        ));
    }
    if instances.is_empty() {
        steps.push(step(format!("ec2 instance of {}", r.stream), "missing"));
    }
    Ok(steps)
}

/// Uploads new files and has the host pull them and restart (SSM Run Command), waiting for
/// the command's outcome: anything but success is an error.
pub async fn update(c: &Clients, h: &Host, files: Files<'_>) -> Result<Vec<Step>, AwsError> {
    let (mut steps, pins) = upload_files(c, h, files).await?;
    let i = find_instances(c, h, false)
        .await?
        .into_iter()
        .find(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running))
        .ok_or_else(|| {
            AwsError::Fatal(format!(
                "no running host for the stream {} (`flagship aws host status`)",
                h.resources.stream
            ))
        })?;
    let id = i.instance_id().unwrap_or_default();
    let sent = c
        .ssm
        .send_command()
        .instance_ids(id)
        .document_name("AWS-RunShellScript")
        .comment(format!("flagship aws host update ({})", h.resources.stream))
        .parameters("commands", vec![update_command(h, &pins)])
        .send()
        .await
        .map_err(fail("ssm SendCommand"))?;
    let command = sent
        .command()
        .and_then(|c| c.command_id())
        .unwrap_or("?")
        .to_owned();
    let (status, said) = command_outcome(c, &command, id).await?;
    if status != CommandInvocationStatus::Success {
        return Err(AwsError::Fatal(format!(
            "the host's update (SSM command {command} on {id}) ended {}: {}",
            status.as_str(),
            said.trim()
        )));
    }
    steps.push(step(
        format!("ec2 instance {id}"),
        format!(
            "updated (SSM command {command}: files pulled, SHA-256 checked, ingest restarted: Success)"
        ),
    ));
    Ok(steps)
}

/// Polls SSM Run Command's `command` on the instance `id` until it ends (ten minutes at
/// most): its final status and what it wrote to standard error.
async fn command_outcome(
    c: &Clients,
    command: &str,
    id: &str,
) -> Result<(CommandInvocationStatus, String), AwsError> {
    use CommandInvocationStatus as S;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut wait = Duration::from_millis(500);
    loop {
        let got = c
            .ssm
            .get_command_invocation()
            .command_id(command)
            .instance_id(id)
            .send()
            .await;
        match got {
            Ok(inv) => match inv.status() {
                Some(S::Pending | S::InProgress | S::Delayed) | None => {}
                Some(s) => {
                    let said = inv.standard_error_content().unwrap_or_default().to_owned();
                    return Ok((s.clone(), said));
                }
            },
            // Not registered yet right after SendCommand.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invocation_does_not_exist()) => {}
            Err(e) => return Err(fail("ssm GetCommandInvocation")(e)),
        }
        if std::time::Instant::now() + wait > deadline {
            return Err(AwsError::Fatal(format!(
                "SSM command {command} on {id} did not finish in 10 minutes"
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Deletes the host's instances, security group, instance profile, role, files and
/// parameters, in that order, verifying each is gone.
pub async fn destroy(c: &Clients, h: &Host) -> Result<Vec<Step>, AwsError> {
    let mut steps = terminate_instances(c, h).await?;
    steps.extend(delete_group(c, h).await?);
    steps.extend(delete_instance_profile(c, h).await?);
    steps.extend(delete_role(c, h).await?);
    steps.extend(delete_files(c, h).await?);
    steps.extend(delete_parameters(c, h).await?);
    Ok(steps)
}

/// Terminates the mission's instances and waits until they are gone (their security group
/// can only go then).
async fn terminate_instances(c: &Clients, h: &Host) -> Result<Vec<Step>, AwsError> {
    let ids: Vec<String> = find_instances(c, h, true)
        .await?
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    c.ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .map_err(fail("ec2 TerminateInstances"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut wait = Duration::from_millis(250);
    while !find_instances(c, h, true).await?.is_empty() {
        if std::time::Instant::now() + wait > deadline {
            return Err(AwsError::Fatal(format!(
                "instances {ids:?} not terminated after 10 minutes"
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(15));
    }
    Ok(ids
        .iter()
        .map(|id| step(format!("ec2 instance {id}"), "terminated (verified)"))
        .collect())
}

/// The mission's security group in the default VPC, if there is one.
async fn delete_group(c: &Clients, h: &Host) -> Result<Option<Step>, AwsError> {
    let vpc = default_vpc(c).await?;
    let Some(g) = find_group(c, h, &vpc).await? else {
        return Ok(None);
    };
    c.ec2
        .delete_security_group()
        .group_id(&g)
        .send()
        .await
        .map_err(fail("ec2 DeleteSecurityGroup"))?;
    if find_group(c, h, &vpc).await?.is_some() {
        return Err(AwsError::Fatal(format!("security group {g} still exists")));
    }
    Ok(Some(step(
        format!("ec2 security group {} ({g})", h.name),
        "deleted (verified)",
    )))
}

/// The instance profile, its roles removed from it first.
async fn delete_instance_profile(c: &Clients, h: &Host) -> Result<Option<Step>, AwsError> {
    let Some(p) = get_profile(c, h).await? else {
        return Ok(None);
    };
    for role in p.roles() {
        c.iam
            .remove_role_from_instance_profile()
            .instance_profile_name(&h.name)
            .role_name(role.role_name())
            .send()
            .await
            .map_err(fail("iam RemoveRoleFromInstanceProfile"))?;
    }
    c.iam
        .delete_instance_profile()
        .instance_profile_name(&h.name)
        .send()
        .await
        .map_err(fail("iam DeleteInstanceProfile"))?;
    if get_profile(c, h).await?.is_some() {
        return Err(AwsError::Fatal(format!(
            "instance profile {} still exists",
            h.name
        )));
    }
    Ok(Some(step(
        format!("iam instance profile {}", h.name),
        "deleted (verified)",
    )))
}

/// The host's role and its inline policies; only this host's (see [`create`]): a role of
/// this name tagged for another host is an error, left as it is.
async fn delete_role(c: &Clients, h: &Host) -> Result<Option<Step>, AwsError> {
    let Some(role) = get_role(c, &h.name).await? else {
        return Ok(None);
    };
    let ours = role
        .tags()
        .iter()
        .any(|t| t.key() == HOST_TAG && t.value() == h.tag());
    if !ours {
        return Err(AwsError::Fatal(format!(
            "role {} is not this host's ({HOST_TAG} ≠ {:?}): left as it is",
            h.name,
            h.tag()
        )));
    }
    let policies = c
        .iam
        .list_role_policies()
        .role_name(&h.name)
        .send()
        .await
        .map_err(fail("iam ListRolePolicies"))?;
    for p in policies.policy_names() {
        c.iam
            .delete_role_policy()
            .role_name(&h.name)
            .policy_name(p)
            .send()
            .await
            .map_err(fail("iam DeleteRolePolicy"))?;
    }
    c.iam
        .delete_role()
        .role_name(&h.name)
        .send()
        .await
        .map_err(fail("iam DeleteRole"))?;
    if get_role(c, &h.name).await?.is_some() {
        return Err(AwsError::Fatal(format!("role {} still exists", h.name)));
    }
    Ok(Some(step(
        format!("iam role {}", h.name),
        "deleted (verified)",
    )))
}

/// The binary and the config in the bucket.
async fn delete_files(c: &Clients, h: &Host) -> Result<Vec<Step>, AwsError> {
    let bucket = &h.resources.bucket;
    let mut steps = Vec::new();
    for key in [h.binary_key(), h.config_key()] {
        if head(c, h, &key).await?.is_none() {
            continue;
        }
        c.s3.delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(fail("s3 DeleteObject"))?;
        if head(c, h, &key).await?.is_some() {
            return Err(AwsError::Fatal(format!("s3://{bucket}/{key} still exists")));
        }
        steps.push(step(format!("s3://{bucket}/{key}"), "deleted (verified)"));
    }
    Ok(steps)
}

/// The mission's SSM parameters (its tokens).
async fn delete_parameters(c: &Clients, h: &Host) -> Result<Vec<Step>, AwsError> {
    let mut steps = Vec::new();
    for (name, _) in parameters(c, h).await? {
        c.ssm
            .delete_parameter()
            .name(&name)
            .send()
            .await
            .map_err(fail("ssm DeleteParameter"))?;
        match c.ssm.get_parameter().name(&name).send().await {
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) => {}
            Ok(_) => return Err(AwsError::Fatal(format!("parameter {name} still exists"))),
            Err(e) => return Err(fail("ssm GetParameter")(e)),
        }
        steps.push(step(format!("ssm {name}"), "deleted (verified)"));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glibc_a_binary_needs_is_its_highest_symbol_version() {
        assert_eq!(
            glibc_needed(b"..GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.17\0"),
            Some(34)
        );
        assert_eq!(glibc_needed(b"no versions"), None);
        let this = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(glibc_needed(&this).is_some_and(|n| n >= 17));
    }

    #[test]
    fn names_carry_the_region_and_long_ones_a_hash() {
        let r = |stream: &str, region: &str| Resources::new("b", region, "raw/", stream);
        let h = Host::new(r("mission_a", "eu-west-1"));
        assert_eq!(h.name, "flagship-host-eu-west-1-mission_a");
        assert_eq!(
            h.parameter("X_BEARER_TOKEN"),
            "/flagship/mission_a/X_BEARER_TOKEN"
        );
        assert_ne!(h.name, Host::new(r("mission_a", "us-east-1")).name);
        let long = "a".repeat(60);
        let (x, y) = (
            Host::new(r(&format!("{long}x"), "eu-west-1")),
            Host::new(r(&format!("{long}y"), "eu-west-1")),
        );
        assert!(x.name.len() <= 64 && y.name.len() <= 64);
        assert_ne!(x.name, y.name);
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            base64(b"#!/bin/bash\necho hi"),
            "IyEvYmluL2Jhc2gKZWNobyBoaQ=="
        );
    }

    /// A generated script run by bash against fake `aws` and `systemctl` programs, its
    /// paths moved under `dir`: (exit code, stderr).
    fn run_script(script: &str, dir: &Path, args: &[&str]) -> (i32, String) {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("fakebin");
        std::fs::create_dir_all(&bin).unwrap();
        for d in ["run", "etc", "bin", "ssm", "s3"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let fakes = [
            (
                "aws",
                r#"#!/bin/bash
# ssm get-parameters --names N (text: the value), ssm get-parameters-by-path (every
# "name<TAB>value"), s3 cp s3://… DEST; from the folders $FAKE/ssm and $FAKE/s3.
case "$1 $2" in
  "ssm get-parameters")
    while [ $# -gt 0 ]; do [ "$1" = --names ] && n=$2; shift; done
    [ -f "$FAKE/ssm$n" ] && cat "$FAKE/ssm$n"; echo; exit 0 ;;
  "ssm get-parameters-by-path")
    while [ $# -gt 0 ]; do [ "$1" = --path ] && p=$2; shift; done
    for f in "$FAKE/ssm$p"/*; do printf '%s\t%s\n' "$p/$(basename "$f")" "$(cat "$f")"; done ;;
  "s3 cp") cp "$FAKE/s3/${3#s3://}" "$4" ;;
  *) echo "fake aws: $*" >&2; exit 2 ;;
esac
"#,
            ),
            (
                "systemctl",
                "#!/bin/bash\necho \"$*\" >> \"$FAKE/systemctl.log\"\n",
            ),
        ];
        for (name, text) in fakes {
            let f = bin.join(name);
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let d = dir.display();
        let script = script
            .replace("-o root -g flagship ", "")
            .replace("/run/flagship", &format!("{d}/run"))
            .replace("/etc/flagship", &format!("{d}/etc"))
            .replace("/usr/local/bin", &format!("{d}/bin"));
        let file = dir.join("script.sh");
        std::fs::write(&file, script).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = std::process::Command::new("bash")
            .arg(&file)
            .args(args)
            .env("PATH", path)
            .env("FAKE", dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn host() -> Host {
        Host::new(Resources::new("b", "eu-west-1", "raw/", "s"))
    }

    #[test]
    fn the_secrets_script_exports_only_the_named_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ssm = d.join("ssm/flagship/s");
        std::fs::create_dir_all(&ssm).unwrap();
        // A writer of the parameter path adds variables of its own.
        for (name, value) in [
            ("X_BEARER_TOKEN", "AAAA%2Ftok-x="),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("HTTPS_PROXY", "http://evil.example:3128"),
        ] {
            std::fs::write(ssm.join(name), value).unwrap();
        }
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(
            d.join("etc/secrets.names"),
            "X_BEARER_TOKEN\nMASTODON_TOKEN_SOCIAL\n",
        )
        .unwrap();
        let script = secrets_script(&host());
        let (code, said) = run_script(&script, d, &[]);
        assert_eq!(code, 0, "{said}");
        let env = std::fs::read_to_string(d.join("run/secrets.env")).unwrap();
        assert_eq!(env, "X_BEARER_TOKEN=AAAA%2Ftok-x=\n");
        // A value that would add a line (or quote its way out) is refused, nothing replaced.
        std::fs::write(ssm.join("X_BEARER_TOKEN"), "tok\nLD_PRELOAD=/tmp/evil.so").unwrap();
        let (code, said) = run_script(&script, d, &[]);
        assert_ne!(code, 0);
        assert!(said.contains("holds a character no token has"), "{said}");
        assert!(!said.contains("evil"), "the value is never printed: {said}");
        let env = std::fs::read_to_string(d.join("run/secrets.env")).unwrap();
        assert_eq!(env, "X_BEARER_TOKEN=AAAA%2Ftok-x=\n");
        // No names recorded: nothing exported.
        std::fs::remove_file(d.join("etc/secrets.names")).unwrap();
        let (code, said) = run_script(&script, d, &[]);
        assert_eq!(code, 0, "{said}");
        assert_eq!(
            std::fs::read_to_string(d.join("run/secrets.env")).unwrap(),
            ""
        );
    }

    #[test]
    fn the_update_script_installs_only_the_files_it_was_pinned_to() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let h = host();
        let s3 = d.join("s3/b/flagship-host/s");
        std::fs::create_dir_all(&s3).unwrap();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/flagship"), "v1").unwrap();
        std::fs::write(s3.join("flagship"), "v2").unwrap();
        std::fs::write(s3.join("flagship.toml"), "[mission]\n").unwrap();
        let good = Pins {
            binary: sha256_hex(b"v2"),
            config: sha256_hex(b"[mission]\n"),
        };
        let script = update_script(&h);
        let log = d.join("systemctl.log");
        // A binary in the bucket that is not the one uploaded: not installed, no restart.
        std::fs::write(s3.join("flagship"), "v2 with a backdoor").unwrap();
        let (code, said) = run_script(&script, d, &[&good.binary, &good.config]);
        assert_eq!(code, 3, "{said}");
        assert!(said.contains("the binary in S3 has SHA-256"), "{said}");
        assert_eq!(
            std::fs::read_to_string(d.join("bin/flagship")).unwrap(),
            "v1"
        );
        assert!(!d.join("bin/flagship.new").exists() && !log.exists());
        // The same for a config swapped in the bucket.
        std::fs::write(s3.join("flagship"), "v2").unwrap();
        std::fs::write(
            s3.join("flagship.toml"),
            "[sources.x]\nbase_url = \"https://evil\"\n",
        )
        .unwrap();
        let (code, said) = run_script(&script, d, &[&good.binary, &good.config]);
        assert_eq!(code, 3, "{said}");
        assert!(said.contains("the config in S3 has SHA-256"), "{said}");
        assert_eq!(
            std::fs::read_to_string(d.join("bin/flagship")).unwrap(),
            "v1"
        );
        assert!(!d.join("etc/flagship.toml").exists() && !log.exists());
        // The files uploaded: installed, the token names recorded, the service restarted.
        std::fs::write(s3.join("flagship.toml"), "[mission]\n").unwrap();
        let (code, said) = run_script(
            &script,
            d,
            &[
                &good.binary,
                &good.config,
                "X_BEARER_TOKEN",
                "MASTODON_TOKEN_SOCIAL",
            ],
        );
        assert_eq!(code, 0, "{said}");
        assert_eq!(
            std::fs::read_to_string(d.join("bin/flagship")).unwrap(),
            "v2"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("etc/flagship.toml")).unwrap(),
            "[mission]\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("etc/secrets.names")).unwrap(),
            "X_BEARER_TOKEN\nMASTODON_TOKEN_SOCIAL\n"
        );
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("restart flagship-ingest")
        );
        // No hashes, or a loader variable as a token name: refused before any download.
        for args in [
            vec![],
            vec!["v2", "x"],
            vec![good.binary.as_str(), good.config.as_str(), "LD_PRELOAD"],
            vec![good.binary.as_str(), good.config.as_str(), "https_proxy"],
        ] {
            let (code, said) = run_script(&script, d, &args);
            assert_eq!(code, 2, "{args:?}: {said}");
        }
    }

    #[test]
    fn token_names_that_steer_a_program_are_refused() {
        let ok = ["X_BEARER_TOKEN", "MASTODON_TOKEN_SOCIAL"].map(String::from);
        assert!(check_token_names(&ok).is_ok());
        for bad in [
            "LD_PRELOAD",
            "HTTPS_PROXY",
            "http_proxy",
            "PATH",
            "AWS_ROLE_ARN",
            "A B",
            "1X",
            "",
        ] {
            assert!(check_token_names(&[bad.to_owned()]).is_err(), "{bad}");
        }
        let mut h = host();
        h.tokens = ok.to_vec();
        let pins = Pins {
            binary: "a".repeat(64),
            config: "b".repeat(64),
        };
        assert!(update_command(&h, &pins).ends_with(&format!(
            "{} {} X_BEARER_TOKEN MASTODON_TOKEN_SOCIAL",
            "a".repeat(64),
            "b".repeat(64)
        )));
    }
}
