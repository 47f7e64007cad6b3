//! The micro-batch plans' regular expressions, compiled once.
//!
//! DataFusion's `regexp_replace` and `regexp_count` compile their pattern on every call: in
//! the live loop, on every micro-batch (42 % of the 3.1 ms a one-post batch took in the
//! plans). [`compile_once`] rewrites a plan's calls whose pattern, replacement and flags are
//! literals into functions that hold the compiled pattern, with DataFusion's meaning: the
//! same `regex` crate, flags folded into the pattern as `regexp_replace` folds them (`g`:
//! every match, else the first), `\1` in a replacement read as group 1. The rules themselves
//! stay where they are written (textproc, filter); `tests/prepared.rs` checks that the
//! rewritten plans give the rows the plans as written give.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, LargeStringArray, StringArray, StringViewArray,
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

/// `plan` with every `regexp_replace` / `regexp_count` over literal patterns replaced by its
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
    let once: Option<Arc<dyn ScalarUDFImpl>> = match (f.func.name(), args.len()) {
        ("regexp_replace", 3 | 4) => match (
            literal(&args[1]),
            literal(&args[2]),
            args.get(3).map(literal),
        ) {
            (Some(p), Some(r), None) => Some(Arc::new(ReplaceOnce::new(p, r, None)?)),
            (Some(p), Some(r), Some(Some(flags))) => {
                Some(Arc::new(ReplaceOnce::new(p, r, Some(flags))?))
            }
            _ => None,
        },
        ("regexp_count", 2) => literal(&args[1])
            .map(|p| CountOnce::new(p).map(|c| Arc::new(c) as Arc<dyn ScalarUDFImpl>))
            .transpose()?,
        _ => None,
    };
    Ok(match once {
        Some(udf) => Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::new_from_shared_impl(udf)),
            vec![args[0].clone()],
        ))),
        None => Transformed::no(e),
    })
}

fn compiled(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

/// `regexp_replace(text, pattern, replacement[, flags])` with its pattern compiled once.
#[derive(Debug)]
struct ReplaceOnce {
    /// The pattern with the flags folded in, as DataFusion compiles it.
    pattern: String,
    re: Regex,
    /// With `\N` groups as `${N}`.
    replacement: String,
    /// 0: every match (`g`); 1: the first.
    limit: usize,
    signature: Signature,
}

impl ReplaceOnce {
    fn new(pattern: &str, replacement: &str, flags: Option<&str>) -> Result<ReplaceOnce> {
        // DataFusion's `regexp_replace` (regexpreplace.rs), for literal arguments.
        let (pattern, limit) = match flags {
            Some("g") => (pattern.to_owned(), 0),
            Some(flags) => (
                format!("(?{}){pattern}", flags.replace('g', "")),
                usize::from(!flags.contains('g')),
            ),
            None => (pattern.to_owned(), 1),
        };
        let groups = compiled(r"\\{1,2}(\d+)")?;
        Ok(ReplaceOnce {
            re: compiled(&pattern)?,
            pattern,
            replacement: groups.replace_all(replacement, "$${$1}").into_owned(),
            limit,
            signature: Signature::string(1, Volatility::Immutable),
        })
    }
}

impl PartialEq for ReplaceOnce {
    fn eq(&self, o: &Self) -> bool {
        (&self.pattern, &self.replacement, self.limit) == (&o.pattern, &o.replacement, o.limit)
    }
}

impl Eq for ReplaceOnce {}

impl std::hash::Hash for ReplaceOnce {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (&self.pattern, &self.replacement, self.limit).hash(h);
    }
}

impl ScalarUDFImpl for ReplaceOnce {
    fn name(&self) -> &str {
        "regexp_replace"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (a, scalar) = input(&args)?;
        let out = each(&a, |v| {
            v.map(|s| self.re.replacen(s, self.limit, self.replacement.as_str()))
        })?;
        // The input's string type (`each` took only these three).
        let out: ArrayRef = match a.data_type() {
            DataType::Utf8 => Arc::new(StringArray::from_iter(out)),
            DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter(out)),
            _ => Arc::new(StringViewArray::from_iter(out)),
        };
        scalar_or_array(out, scalar)
    }
}

/// `regexp_count(text, pattern)` with its pattern compiled once.
#[derive(Debug)]
struct CountOnce {
    pattern: String,
    re: Regex,
    signature: Signature,
}

impl CountOnce {
    fn new(pattern: &str) -> Result<CountOnce> {
        Ok(CountOnce {
            re: compiled(pattern)?,
            pattern: pattern.to_owned(),
            signature: Signature::string(1, Volatility::Immutable),
        })
    }

    fn count(&self, s: Option<&str>) -> Option<i64> {
        s.map(|s| self.re.find_iter(s).count() as i64)
    }
}

impl PartialEq for CountOnce {
    fn eq(&self, o: &Self) -> bool {
        self.pattern == o.pattern
    }
}

impl Eq for CountOnce {}

impl std::hash::Hash for CountOnce {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.pattern.hash(h);
    }
}

impl ScalarUDFImpl for CountOnce {
    fn name(&self) -> &str {
        "regexp_count"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (a, scalar) = input(&args)?;
        let out = Int64Array::from(each(&a, |v| self.count(v))?);
        scalar_or_array(Arc::new(out), scalar)
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
    use datafusion::functions::expr_fn::{regexp_count, regexp_replace};
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
