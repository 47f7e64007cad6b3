//! The micro-batch plans' regular expressions, compiled once.
//!
//! DataFusion's `regexp_replace`, `regexp_count` and `regexp_like` compile their pattern on
//! every call: in the live loop, on every micro-batch (42 % of the 3.1 ms a one-post batch
//! took in the plans). [`compile_once`] rewrites a plan's calls whose pattern, replacement and
//! flags are literals into functions that hold the compiled pattern, with DataFusion's
//! meaning: the same `regex` crate, flags folded into the pattern as DataFusion folds them
//! (`g`: every match, else the first), `\1` in a replacement read as group 1. The rules themselves
//! stay where they are written (textproc, filter); `tests/prepared.rs` checks that the
//! rewritten plans give the rows the plans as written give.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, LargeStringArray, StringArray,
    StringViewArray,
};
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use regex::Regex;

/// `plan` with every `regexp_replace` / `regexp_count` / `regexp_like` over literal patterns
/// (before the optimiser turns a `regexp_like` into a `~` operator) replaced by its
/// compiled-once twin, and how many calls were. Calls with a non-literal pattern (or a start
/// position) are left as they are.
pub fn compile_once(plan: LogicalPlan) -> Result<(LogicalPlan, usize)> {
    let mut n = 0;
    let plan = plan
        .transform_up(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| {
                    let t = rewrite(e)?;
                    n += usize::from(t.transformed);
                    Ok(t)
                })
            })
        })?
        .data;
    Ok((plan, n))
}

fn literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => Some(s),
        _ => None,
    }
}

fn rewrite(e: Expr) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(f) = &e else {
        return Ok(Transformed::no(e));
    };
    let args = &f.args;
    let flags = args.get(3).map(literal);
    let once = match (f.func.name(), args.len()) {
        ("regexp_replace", 3 | 4) => match (literal(&args[1]), literal(&args[2]), flags) {
            (Some(p), Some(r), None) => Some(Once::replace(p, r, None)?),
            (Some(p), Some(r), Some(Some(flags))) => Some(Once::replace(p, r, Some(flags))?),
            _ => None,
        },
        ("regexp_count", 2) => literal(&args[1]).map(Once::count).transpose()?,
        ("regexp_like", 2 | 3) => match (literal(&args[1]), args.get(2).map(literal)) {
            (Some(p), None) => Some(Once::like(p, None)?),
            // `g` is an error in DataFusion's: left to it to say so.
            (Some(p), Some(Some(flags))) if !flags.contains('g') && !flags.is_empty() => {
                Some(Once::like(p, Some(flags))?)
            }
            _ => None,
        },
        _ => None,
    };
    Ok(match once {
        Some(udf) => Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::new_from_shared_impl(Arc::new(udf))),
            vec![args[0].clone()],
        ))),
        None => Transformed::no(e),
    })
}

fn compiled(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

/// Which DataFusion function a [`Once`] stands for, and what it keeps besides the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Call {
    /// `regexp_replace`: the replacement with `\N` groups as `${N}`; `limit` 0: every match
    /// (`g`), 1: the first.
    Replace { replacement: String, limit: usize },
    /// `regexp_count`: how many matches.
    Count,
    /// `regexp_like`: whether any.
    Like,
}

/// A regex function of one string argument with its pattern compiled once.
#[derive(Debug)]
struct Once {
    call: Call,
    /// The pattern with the flags folded in, as DataFusion compiles it.
    pattern: String,
    re: Regex,
    signature: Signature,
}

impl Once {
    fn new(call: Call, pattern: String) -> Result<Once> {
        Ok(Once {
            call,
            re: compiled(&pattern)?,
            pattern,
            signature: Signature::string(1, Volatility::Immutable),
        })
    }

    /// `regexp_replace(text, pattern, replacement[, flags])`, as DataFusion's
    /// (regexpreplace.rs) reads literal arguments.
    fn replace(pattern: &str, replacement: &str, flags: Option<&str>) -> Result<Once> {
        let (pattern, limit) = match flags {
            Some("g") => (pattern.to_owned(), 0),
            Some(flags) => (
                format!("(?{}){pattern}", flags.replace('g', "")),
                usize::from(!flags.contains('g')),
            ),
            None => (pattern.to_owned(), 1),
        };
        let groups = compiled(r"\\{1,2}(\d+)")?;
        let replacement = groups.replace_all(replacement, "$${$1}").into_owned();
        Once::new(Call::Replace { replacement, limit }, pattern)
    }

    /// `regexp_count(text, pattern)`.
    fn count(pattern: &str) -> Result<Once> {
        Once::new(Call::Count, pattern.to_owned())
    }

    /// `regexp_like(text, pattern[, flags])`, flags folded in as arrow's
    /// `regexp_is_match_scalar` folds them.
    fn like(pattern: &str, flags: Option<&str>) -> Result<Once> {
        let pattern = match flags {
            Some(f) if !f.is_empty() => format!("(?{f}){pattern}"),
            _ => pattern.to_owned(),
        };
        Once::new(Call::Like, pattern)
    }
}

impl PartialEq for Once {
    fn eq(&self, o: &Self) -> bool {
        (&self.call, &self.pattern) == (&o.call, &o.pattern)
    }
}

impl Eq for Once {}

impl std::hash::Hash for Once {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (&self.call, &self.pattern).hash(h);
    }
}

impl ScalarUDFImpl for Once {
    fn name(&self) -> &str {
        match self.call {
            Call::Replace { .. } => "regexp_replace",
            Call::Count => "regexp_count",
            Call::Like => "regexp_like",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match self.call {
            Call::Replace { .. } => args[0].clone(),
            Call::Count => DataType::Int64,
            Call::Like => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (a, scalar) = input(&args)?;
        let re = &self.re;
        let out: ArrayRef = match &self.call {
            Call::Replace { replacement, limit } => {
                let out = each(&a, |v| {
                    v.map(|s| re.replacen(s, *limit, replacement.as_str()))
                })?;
                // The input's string type (`each` took only these three).
                match a.data_type() {
                    DataType::Utf8 => Arc::new(StringArray::from_iter(out)),
                    DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter(out)),
                    _ => Arc::new(StringViewArray::from_iter(out)),
                }
            }
            Call::Count => Arc::new(Int64Array::from(each(&a, |v| {
                v.map(|s| re.find_iter(s).count() as i64)
            })?)),
            Call::Like => Arc::new(BooleanArray::from(each(&a, |v| v.map(|s| re.is_match(s)))?)),
        };
        scalar_or_array(out, scalar)
    }
}

/// The one argument as an array, and whether it came as a scalar.
fn input(args: &ScalarFunctionArgs) -> Result<(ArrayRef, bool)> {
    let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
    Ok((args.args[0].to_array(args.number_rows)?, scalar))
}

/// Each string of `a` (Utf8, LargeUtf8 or Utf8View) through `f`, in order.
fn each<'a, T>(a: &'a ArrayRef, f: impl FnMut(Option<&'a str>) -> T) -> Result<Vec<T>> {
    Ok(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().iter().map(f).collect(),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().map(f).collect(),
        DataType::Utf8View => a.as_string_view().iter().map(f).collect(),
        t => return exec_err!("a regex function of {t}"),
    })
}

fn scalar_or_array(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    Ok(if scalar && out.len() == 1 {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
    } else {
        ColumnarValue::Array(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::functions::expr_fn::{regexp_count, regexp_like, regexp_replace};
    use datafusion::logical_expr::lit;
    use datafusion::prelude::{SessionContext, col};

    /// Each rewritten call gives DataFusion's own answer, on texts with what the patterns
    /// look for (URLs, mentions, hashtags, whitespace runs, non-ASCII, nulls).
    #[tokio::test]
    async fn compiled_once_answers_as_datafusion_does() {
        let texts = [
            Some("see https://t.co/x1 and WWW.example.com now"),
            Some("@nasa #JWST\tfirst  light\n\nwow @esa_webb"),
            Some("Ünïcödé #Wébb —  done"),
            None,
            Some(""),
        ];
        let ctx = SessionContext::new();
        let batch = arrow::record_batch::RecordBatch::try_from_iter([(
            "text",
            Arc::new(arrow::array::StringArray::from(texts.to_vec())) as ArrayRef,
        )])
        .unwrap();
        let cases = [
            regexp_replace(
                col("text"),
                lit(r"(?i)\b(?:https?://|www\.)\S+"),
                lit(" "),
                Some(lit("g")),
            ),
            regexp_replace(col("text"), lit(r"#(\w+)"), lit(r"\1"), Some(lit("g"))),
            regexp_replace(col("text"), lit(r"\s+"), lit("_"), None),
            regexp_replace(col("text"), lit(r"W"), lit("w"), Some(lit("i"))),
            regexp_replace(col("text"), lit(r"[^a-z]+"), lit(" "), Some(lit("gi"))),
            regexp_count(col("text"), lit(r"\S+"), None, None),
            regexp_like(col("text"), lit(r"(?i)\b(?:jwst|webb)\b"), None),
            regexp_like(col("text"), lit(r"first light"), Some(lit("i"))),
            regexp_like(col("text"), lit(r"^$"), None),
        ];
        for case in cases {
            let df = ctx
                .read_batch(batch.clone())
                .unwrap()
                .select(vec![case.alias("out")])
                .unwrap();
            let (state, plan) = df.into_parts();
            let (once, n) = compile_once(plan.clone()).unwrap();
            let shown = format!("{}", once.display_indent());
            assert_eq!(n, 1, "{shown}");
            let want = datafusion::prelude::DataFrame::new(state.clone(), plan)
                .collect()
                .await
                .unwrap();
            let got = datafusion::prelude::DataFrame::new(state, once)
                .collect()
                .await
                .unwrap();
            assert_eq!(got, want, "{shown}");
        }
    }
}
