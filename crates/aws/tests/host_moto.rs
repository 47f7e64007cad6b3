//! The streaming host against a real AWS API (moto_server: EC2, IAM, SSM, S3, Firehose): two
//! missions' delivery streams, then mission A's host created (twice: idempotent), read back
//! (IMDSv2, no inbound rule, HTTPS out only, the role's policy scoped to A, the token in SSM as
//! SecureString and nowhere in user-data), updated (a new binary, SSM Run Command), mission
//! B's host beside it, A destroyed with every deletion verified, B untouched, B destroyed.
//! The user-data is checked by bash, its unit and drop-in by `systemd-analyze verify`.
//! Prints the transcript. One test in this binary: it sets credentials in its own
//! environment before any thread.

use std::path::Path;

use flagship_aws::host::{self, Files, Host};
use flagship_aws::{self as aws, Resources};
use flagship_testkit::MotoServer;

const TOKEN: &str = "AAAA-x-bearer-token-of-mission-a-never-in-user-data";

fn show(what: &str, steps: &[aws::Step]) {
    for s in steps {
        println!("aws host {what}: {:<64} {}", s.resource, s.state);
    }
}

fn states(steps: &[aws::Step]) -> String {
    steps
        .iter()
        .map(|s| format!("{} = {}", s.resource, s.state))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A program on this machine, or `None` (under CI: a failure, never a skip).
fn program(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("{name} is not installed (CI: the check must run)");
    }
    found
}

/// The user-data is a valid bash script, and its unit and drop-in verify.
fn check_user_data(h: &Host, user_data: &str, dir: &Path) {
    let script = dir.join("user-data.sh");
    std::fs::write(&script, user_data).unwrap();
    let bash = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    let Some(analyze) = program("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: the unit check is skipped here");
        return;
    };
    // The unit and its drop-in where systemd looks for them (SYSTEMD_UNIT_PATH), the host's
    // programs pointed at ones that exist here.
    let units = dir.join("units");
    let dropins = units.join("flagship-ingest.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let here = |text: &str| {
        text.replace("/usr/local/bin/flagship", "/bin/true")
            .replace("/usr/local/lib/flagship/secrets", "/bin/true")
    };
    for (path, _, text) in host::host_files(h) {
        if path.ends_with("flagship-ingest.service") {
            std::fs::write(units.join("flagship-ingest.service"), here(&text)).unwrap();
        } else if path.ends_with("host.conf") {
            std::fs::write(dropins.join("host.conf"), here(&text)).unwrap();
        }
    }
    let out = std::process::Command::new(analyze)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .args(["verify", "--man=no"])
        .arg(units.join("flagship-ingest.service"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "systemd-analyze verify (unit + the host's drop-in): {:?}",
        said.trim()
    );
    let findings: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("flagship-ingest") || l.contains("host.conf"))
        .collect();
    assert!(findings.is_empty(), "{said}");
    assert!(out.status.success(), "{said}");
}

#[test]
fn a_streaming_host_per_mission_on_moto() {
    let moto = MotoServer::start();
    // SAFETY: the only test in this binary, before any other thread exists.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("flagship");
    let config = dir.path().join("flagship.toml");
    std::fs::write(&binary, b"\x7fELF the streaming-host build, v1").unwrap();
    std::fs::write(&config, "[mission]\nname = \"jwst\"\n").unwrap();
    let files = Files {
        binary: &binary,
        config: &config,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mission = |bucket: &str, stream: &str| {
            Resources::new(bucket, "eu-west-1", "raw/", stream).with_endpoint(Some(moto.endpoint()))
        };
        let (ra, rb) = (
            mission("flagship-a", "mission_a"),
            mission("flagship-b", "mission_b"),
        );
        let c = aws::Clients::new(&ra).await;
        // A host puts to its mission's delivery stream: none yet is a clear error.
        let mut ha = Host::new(ra.clone());
        ha.tokens = vec!["MASTODON_TOKEN_SOCIAL".into(), "X_BEARER_TOKEN".into()];
        let e = host::create(&c, &ha, files, &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("flagship aws create --bucket flagship-a --stream mission_a"),
            "{e}"
        );
        aws::create(&c, &ra).await.unwrap();
        aws::create(&c, &rb).await.unwrap();
        // A binary built against a newer glibc than Amazon Linux 2023's is refused first.
        let newer = dir.path().join("flagship-newer-glibc");
        std::fs::write(&newer, b"\x7fELF ... GLIBC_2.17\0GLIBC_2.35\0").unwrap();
        let newer_files = Files {
            binary: &newer,
            config: &config,
        };
        let e = host::create(&c, &ha, newer_files, &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs glibc 2.35") && e.contains("Amazon Linux 2023 has 2.34"),
            "{e}"
        );
        // A role of the host's name that is not the host's is never taken over.
        let rc = mission("flagship-a", "mission_c");
        let hc = Host::new(rc.clone());
        aws::create(&c, &rc).await.unwrap();
        c.iam
            .create_role()
            .role_name(&hc.name)
            .assume_role_policy_document(host::trust_policy())
            .send()
            .await
            .unwrap();
        let e = host::create(&c, &hc, files, &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not this host's"), "{e}");
        let e = host::destroy(&c, &hc).await.unwrap_err().to_string();
        assert!(e.contains("is not this host's"), "{e}");
        let nothing =
            c.s3.list_objects_v2()
                .bucket("flagship-a")
                .prefix(&hc.key_prefix)
                .send()
                .await
                .unwrap();
        assert_eq!(
            nothing.key_count(),
            Some(0),
            "nothing uploaded for a refused host"
        );

        // Only the host's token variables are stored, and only values its script takes.
        for (name, value, says) in [
            (
                "LD_PRELOAD",
                "/tmp/x.so",
                "not among the host's token variables",
            ),
            ("X_BEARER_TOKEN", "a b", "holds a space"),
        ] {
            let bad = vec![(name.to_owned(), value.to_owned())];
            let e = host::create(&c, &ha, files, &bad)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        let mut proxied = ha.clone();
        proxied.tokens.push("HTTPS_PROXY".into());
        let e = host::create(&c, &proxied, files, &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be a token variable"), "{e}");
        let secrets = vec![("X_BEARER_TOKEN".to_owned(), TOKEN.to_owned())];
        let created = host::create(&c, &ha, files, &secrets).await.unwrap();
        show("create", &created);
        let all = states(&created);
        for want in [
            "uploaded from",
            "stored from $X_BEARER_TOKEN (SecureString)",
            "iam role flagship-host-eu-west-1-mission_a = created",
            "created with its role",
            "created: no inbound rule, outbound tcp/443 only",
            "launched (",
            "IMDSv2 required",
        ] {
            assert!(all.contains(want), "{want} in\n{all}");
        }
        assert!(!all.contains(TOKEN));
        // Again: everything found, nothing new, the same instance.
        let again = host::create(&c, &ha, files, &secrets).await.unwrap();
        show("create (again)", &again);
        let again_all = states(&again);
        assert!(
            again_all.contains("unchanged") && again_all.contains("exists ("),
            "{again_all}"
        );
        assert!(
            !again_all.contains("launched") && !again_all.contains("created"),
            "idempotent:\n{again_all}"
        );

        // The instance, read back.
        let out = c
            .ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(format!("tag:{}", host::HOST_TAG))
                    .values("eu-west-1/mission_a")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let instances: Vec<_> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .collect();
        assert_eq!(instances.len(), 1, "one host per mission");
        let i = instances[0];
        let id = i.instance_id().unwrap().to_owned();
        let imds = i.metadata_options().unwrap();
        assert_eq!(imds.http_tokens().map(|t| t.as_str()), Some("required"));
        assert_eq!(imds.http_put_response_hop_limit(), Some(1));
        assert!(
            i.iam_instance_profile()
                .unwrap()
                .arn()
                .unwrap()
                .ends_with("/flagship-host-eu-west-1-mission_a"),
            "{i:?}"
        );
        // The security group: nothing in, HTTPS out.
        let group = i.security_groups()[0].group_id().unwrap().to_owned();
        let g = c
            .ec2
            .describe_security_groups()
            .group_ids(&group)
            .send()
            .await
            .unwrap();
        let g = &g.security_groups()[0];
        assert!(g.ip_permissions().is_empty(), "no inbound rule: {g:?}");
        let out_rules: Vec<_> = g
            .ip_permissions_egress()
            .iter()
            .map(|p| (p.ip_protocol().unwrap_or(""), p.from_port(), p.to_port()))
            .collect();
        assert_eq!(out_rules, [("tcp", Some(443), Some(443))]);
        // The user-data: no token, the mission's stream, IMDS-free (the SDK and CLI use the
        // role); valid bash; its unit and drop-in verify.
        let ud = c
            .ec2
            .describe_instance_attribute()
            .instance_id(&id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let ud = ud.user_data().and_then(|u| u.value()).unwrap();
        let ud = String::from_utf8(decode64(ud)).unwrap();
        let pins = host::Pins {
            binary: host::sha256_hex(&std::fs::read(&binary).unwrap()),
            config: host::sha256_hex(&std::fs::read(&config).unwrap()),
        };
        assert_eq!(ud, host::user_data(&ha, &pins).unwrap());
        // The first pull installs exactly what was uploaded and names the tokens it exports.
        assert!(
            ud.contains(&format!(
                "/usr/local/lib/flagship/update {} {} MASTODON_TOKEN_SOCIAL X_BEARER_TOKEN",
                pins.binary, pins.config
            )),
            "{ud}"
        );
        assert!(
            !ud.contains(TOKEN) && !ud.contains("AWS_SECRET"),
            "no secret in user-data"
        );
        assert!(ud.contains("--stream mission_a") && ud.contains("/flagship/mission_a"));
        check_user_data(&ha, &ud, dir.path());
        // The token: a SecureString under the mission's path, nowhere else.
        let p = c
            .ssm
            .get_parameter()
            .name("/flagship/mission_a/X_BEARER_TOKEN")
            .with_decryption(true)
            .send()
            .await
            .unwrap();
        let p = p.parameter().unwrap();
        assert_eq!(p.r#type().map(|t| t.as_str()), Some("SecureString"));
        assert_eq!(p.value(), Some(TOKEN));
        // The role's one policy: mission A's stream, objects and parameters, nothing of B's.
        let policy = c
            .iam
            .get_role_policy()
            .role_name("flagship-host-eu-west-1-mission_a")
            .policy_name("flagship-host")
            .send()
            .await
            .unwrap();
        let doc = urlencoding_decode(policy.policy_document());
        println!("iam policy of flagship-host-eu-west-1-mission_a:\n{doc}");
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let resources: Vec<String> = v["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| match &s["Resource"] {
                serde_json::Value::Array(a) => {
                    a.iter().map(|r| r.as_str().unwrap().to_owned()).collect()
                }
                r => vec![r.as_str().unwrap().to_owned()],
            })
            .collect();
        assert!(
            resources.contains(
                &"arn:aws:firehose:eu-west-1:123456789012:deliverystream/mission_a".to_owned()
            ),
            "{resources:?}"
        );
        assert!(
            resources.contains(&"arn:aws:s3:::flagship-a/flagship-host/mission_a/*".to_owned()),
            "{resources:?}"
        );
        assert!(!doc.contains("mission_b") && !doc.contains("flagship-b"));
        // Only Session Manager's channels are not scoped to the mission.
        for s in v["Statement"].as_array().unwrap() {
            if s["Resource"] == "*" {
                assert_eq!(s["Sid"], "SessionManager", "{s}");
                assert!(s["Action"].as_array().unwrap().iter().all(|a| {
                    let a = a.as_str().unwrap();
                    a.starts_with("ssmmessages:")
                        || a.starts_with("ec2messages:")
                        || a == "ssm:UpdateInstanceInformation"
                }));
            }
        }
        let objects =
            c.s3.get_object()
                .bucket("flagship-a")
                .key(ha.binary_key())
                .send()
                .await
                .unwrap();
        let bytes = objects.body.collect().await.unwrap().into_bytes();
        assert_eq!(&bytes[..], std::fs::read(&binary).unwrap());

        let status = host::status(&c, &ha).await.unwrap();
        show("status", &status);
        let st = states(&status);
        assert!(
            st.contains("running (t3.micro; IMDSv2 tokens required"),
            "{st}"
        );
        assert!(st.contains("exists: 0 inbound rules, 1 outbound"), "{st}");
        assert!(
            st.contains("X_BEARER_TOKEN = exists (SecureString)"),
            "{st}"
        );
        assert!(!st.contains("missing"), "{st}");

        // update: a new binary, then the host told to pull it (SSM Run Command).
        std::fs::write(&binary, b"\x7fELF the streaming-host build, v2").unwrap();
        let updated = host::update(&c, &ha, files).await.unwrap();
        show("update", &updated);
        let up = states(&updated);
        assert!(
            up.contains("flagship = uploaded") && up.contains("flagship.toml = unchanged"),
            "{up}"
        );
        assert!(
            up.contains("updated (SSM command") && up.contains("Success"),
            "{up}"
        );
        let commands = c.ssm.list_commands().instance_id(&id).send().await.unwrap();
        let cmd = &commands.commands()[0];
        assert_eq!(cmd.document_name(), Some("AWS-RunShellScript"));
        // The command pins the new binary's SHA-256 (the host checks it before installing).
        let v2 = host::Pins {
            binary: host::sha256_hex(b"\x7fELF the streaming-host build, v2"),
            config: host::sha256_hex(&std::fs::read(&config).unwrap()),
        };
        assert_eq!(
            cmd.parameters().unwrap()["commands"],
            [format!(
                "/usr/local/lib/flagship/update {} {} MASTODON_TOKEN_SOCIAL X_BEARER_TOKEN",
                v2.binary, v2.config
            )]
        );

        // A second mission's host beside it.
        let hb = Host::new(rb.clone());
        let b_created = host::create(&c, &hb, files, &[]).await.unwrap();
        show("create (mission B)", &b_created);
        assert!(states(&b_created).contains("launched ("));
        let destroyed = host::destroy(&c, &ha).await.unwrap();
        show("destroy", &destroyed);
        let d = states(&destroyed);
        for gone in [
            "terminated (verified)",
            "ec2 security group flagship-host-eu-west-1-mission_a",
            "iam instance profile flagship-host-eu-west-1-mission_a = deleted (verified)",
            "iam role flagship-host-eu-west-1-mission_a = deleted (verified)",
            "flagship-host/mission_a/flagship = deleted (verified)",
            "/flagship/mission_a/X_BEARER_TOKEN = deleted (verified)",
        ] {
            assert!(d.contains(gone), "{gone} in\n{d}");
        }
        assert!(!d.contains("mission_b"), "{d}");
        let a_after = states(&host::status(&c, &ha).await.unwrap());
        assert!(
            !a_after.contains("exists"),
            "everything of A gone:\n{a_after}"
        );
        let b_after = host::status(&c, &hb).await.unwrap();
        show("status (mission B, after A's destroy)", &b_after);
        let b_after = states(&b_after);
        assert!(
            b_after.contains("running (") && !b_after.contains("missing"),
            "{b_after}"
        );
        // Destroying again finds nothing; B goes too.
        assert!(host::destroy(&c, &ha).await.unwrap().is_empty());
        let b_gone = host::destroy(&c, &hb).await.unwrap();
        assert!(states(&b_gone).contains("terminated (verified)"));
    });
}

fn decode64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::new();
    for c in bytes.chunks(4) {
        let n = c.iter().fold(0u32, |n, &b| n << 6 | val(b));
        let pads = c.iter().filter(|&&b| b == b'=').count();
        let n = n << (6 * (4 - c.len()));
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pads]);
    }
    out
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
