//! Storage locations as values: `s3://bucket/prefix`, `file:///dir` or a path, and how to
//! reach S3-compatible storage. Parsing only — opening a location is `flagship-store`'s job.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};

use url::Url;

/// A location string that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid location {location:?}: {reason}")]
pub struct LocationError {
    pub location: String,
    pub reason: String,
}

/// Where a stage's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// `a/b/../c/./d` → `a/c/d`, without touching the file system (a `..` past the start stays).
fn lexical(p: &FsPath) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !matches!(out.components().next_back(), Some(Component::Normal(_))) || !out.pop()
                {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

impl Location {
    /// Parses `s3://bucket/prefix`, `file:///dir` or a path; a relative path is joined to `base`.
    pub fn parse(s: &str, base: &FsPath) -> Result<Location, LocationError> {
        let invalid = |reason: &str| LocationError {
            location: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.trim().is_empty() {
            return Err(invalid("empty"));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            let url = Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
            return match scheme {
                "s3" => {
                    let bucket = url
                        .host_str()
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| invalid("no bucket name"))?;
                    Ok(Location::S3 {
                        bucket: bucket.to_owned(),
                        prefix: url.path().trim_matches('/').to_owned(),
                    })
                }
                "file" => url
                    .to_file_path()
                    .map(Location::Local)
                    .map_err(|_| invalid("not an absolute file path")),
                other => Err(invalid(&format!(
                    "unsupported scheme `{other}` (use a path, file:// or s3://)"
                ))),
            };
        }
        let p = FsPath::new(s);
        Ok(Location::Local(lexical(&if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        })))
    }

    /// A sub-location (`raw/2022/01/01`).
    pub fn join(&self, rel: &str) -> Location {
        let rel = rel.trim_matches('/');
        match self {
            Location::Local(p) => Location::Local(p.join(rel)),
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() {
                    rel.to_owned()
                } else {
                    format!("{prefix}/{rel}")
                },
            },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// How to reach S3-compatible storage; no secrets here.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// Custom endpoint (moto, MinIO); plain HTTP is allowed for it.
    pub endpoint_url: Option<String>,
    /// Region; else `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_locations() {
        let base = FsPath::new("/cfg");
        assert_eq!(
            Location::parse("data/raw", base).unwrap(),
            Location::Local("/cfg/data/raw".into())
        );
        assert_eq!(
            Location::parse("../../data/./demo/raw", FsPath::new("/repo/fixtures/demo")).unwrap(),
            Location::Local("/repo/data/demo/raw".into())
        );
        assert_eq!(
            lexical(FsPath::new("../x/../../y")),
            PathBuf::from("../../y")
        );
        assert_eq!(
            Location::parse("file:///tmp/x", base).unwrap(),
            Location::Local("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("s3://bkt/datasets/twitter/", base).unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "datasets/twitter".into()
            }
        );
        let loc = Location::parse("s3://bkt", base).unwrap();
        assert_eq!(loc.join("2022/01").to_string(), "s3://bkt/2022/01");
        for bad in ["", "gs://b/x", "s3:///nobucket"] {
            let e = Location::parse(bad, base).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
