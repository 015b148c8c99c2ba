//! Model cards (`models/*.md`) rendered from templates (`models/cards/*.md`), so that every
//! figure about a shipped file comes from the file itself or from what a command measured on
//! it, never from a hand-typed number.
//!
//! A template is Markdown with placeholders `{{SOURCE ARGS… [FORMAT]}}`, paths relative to the
//! rendered card's folder:
//!
//! | placeholder | value |
//! |---|---|
//! | `{{size FILE}}` | `5,070,194 B (4.8 MiB)` |
//! | `{{card FILE PATH FORMAT}}` | a field of the model card in an ONNX file's metadata (a reference classifier's description for a classifier) |
//! | `{{json FILE PATH FORMAT}}` | a field of a JSON file (`mf-edge eval --json`, `bench --json`) |
//! | `{{ratio FILE PATH FILE PATH FORMAT}}` | the first value over the second |
//!
//! A PATH is `/`-separated: an object key, an array index, or `[key=value,…]`, the first array
//! element whose fields print as those values (`/rows/[model=mnist-int8.onnx,steps=1]/frechet`);
//! `key~=value` matches a field that starts with the value (`backend~=native`).
//! FORMAT is `.N` (N decimals), `.Ne` (scientific, N decimals), `,` (an integer with thousands
//! separators), `%.N` (a share as a percentage with N decimals) or `s` (as is, the default).
use std::path::Path;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use mf_core::onnx;
use prost::Message;

use crate::eval::CLASSIFIER_KEY;
use crate::model::Model;

/// The first line of every rendered card.
const GENERATED: &str = "<!-- Rendered by `mf-edge render-card` from models/cards/; edit the template there, not this file. -->";

/// Renders the template `text`, resolving files against `folder`.
pub fn render(text: &str, folder: &Path) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    out.push_str(GENERATED);
    out.push('\n');
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .with_context(|| format!("an unclosed {{{{ in {:?}", &rest[start..].lines().next()))?;
        let inner = &rest[start + 2..start + end];
        let value = placeholder(inner, folder).with_context(|| format!("in {{{{{inner}}}}}"))?;
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders `template` and compares it with `card`: `Ok` when they agree, else an error naming
/// the first line that differs.
pub fn check(template: &Path, card: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read {}", template.display()))?;
    let folder = mf_core::atomic::folder(card);
    let want = render(&text, folder)?;
    let have =
        std::fs::read_to_string(card).with_context(|| format!("cannot read {}", card.display()))?;
    if let Some((i, (w, h))) = want
        .lines()
        .zip(have.lines())
        .enumerate()
        .find(|(_, (w, h))| w != h)
    {
        bail!(
            "{} disagrees with its files at line {}:\n  card:     {h}\n  rendered: {w}\nrun tools/render-cards",
            card.display(),
            i + 1
        );
    }
    ensure!(
        want.lines().count() == have.lines().count(),
        "{} has {} lines; its template renders {} (run tools/render-cards)",
        card.display(),
        have.lines().count(),
        want.lines().count()
    );
    Ok(())
}

fn placeholder(inner: &str, folder: &Path) -> anyhow::Result<String> {
    let words: Vec<&str> = inner.split_whitespace().collect();
    match words.as_slice() {
        ["size", file] => {
            let bytes = std::fs::metadata(folder.join(file))
                .with_context(|| format!("cannot read {file}"))?
                .len();
            Ok(format!(
                "{} B ({:.1} MiB)",
                thousands(bytes as i128),
                bytes as f64 / (1 << 20) as f64
            ))
        }
        ["card" | "json", file, path, format @ ..] => {
            let v = lookup(&source(words[0], file, folder)?, path)?;
            show(&v, format.first().copied().unwrap_or("s"))
        }
        ["ratio", f1, p1, f2, p2, format @ ..] => {
            let number = |f: &str, p: &str| -> anyhow::Result<f64> {
                let kind = if f.ends_with(".onnx") { "card" } else { "json" };
                lookup(&source(kind, f, folder)?, p)?
                    .as_f64()
                    .with_context(|| format!("{f} {p} is not a number"))
            };
            let ratio = number(f1, p1)? / number(f2, p2)?;
            show(
                &serde_json::json!(ratio),
                format.first().copied().unwrap_or(".2"),
            )
        }
        _ => bail!("expected size, card, json or ratio with their arguments"),
    }
}

/// The JSON of a model's card, or of a JSON file.
fn source(kind: &str, file: &str, folder: &Path) -> anyhow::Result<Value> {
    let path = folder.join(file);
    if kind == "card" {
        let bytes = mf_core::bounded::read(&path, crate::model::MAX_MODEL_BYTES, "model")?;
        let proto = onnx::ModelProto::decode(bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("{} is not an ONNX model: {e}", path.display()))?;
        if let Some(meta) = proto
            .metadata_props
            .iter()
            .find(|p| p.key == CLASSIFIER_KEY)
        {
            return serde_json::from_str(&meta.value)
                .with_context(|| format!("{}: invalid {CLASSIFIER_KEY}", path.display()));
        }
        let model = Model::from_bytes(bytes)?;
        Ok(serde_json::to_value(&model.card)?)
    } else {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    }
}

/// Follows a PATH (see the module docs).
fn lookup(root: &Value, path: &str) -> anyhow::Result<Value> {
    let mut v = root;
    for seg in segments(path) {
        v = if let Some(filter) = seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let wanted: Vec<(&str, &str)> = filter
                .split(',')
                .map(|kv| kv.split_once('=').context("a filter is key=value,…"))
                .collect::<anyhow::Result<_>>()?;
            let matches = |item: &Value, key: &str, want: &str| {
                let (key, prefix) = match key.strip_suffix('~') {
                    Some(k) => (k, true),
                    None => (key, false),
                };
                item.get(key).is_some_and(|f| {
                    let text = f.as_str().map_or(f.to_string(), str::to_string);
                    if prefix {
                        text.starts_with(want)
                    } else {
                        text == want
                    }
                })
            };
            v.as_array()
                .context("a filter applies to an array")?
                .iter()
                .find(|item| wanted.iter().all(|(k, want)| matches(item, k, want)))
                .with_context(|| format!("no element matches [{filter}]"))?
        } else if let Ok(i) = seg.parse::<usize>() {
            v.get(i).with_context(|| format!("no element {i}"))?
        } else {
            v.get(seg).with_context(|| format!("no field {seg:?}"))?
        };
    }
    Ok(v.clone())
}

/// A PATH's segments: split at `/` outside `[…]` (a filter's values may hold slashes).
fn segments(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in path.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&path[start..]);
    out.retain(|s| !s.is_empty());
    out
}

/// Formats a value (see the module docs).
fn show(v: &Value, format: &str) -> anyhow::Result<String> {
    if format == "s" {
        return Ok(v.as_str().map_or(v.to_string(), str::to_string));
    }
    let x = v
        .as_f64()
        .with_context(|| format!("{v} is not a number (format {format})"))?;
    if format == "," {
        return Ok(thousands(x.round() as i128));
    }
    let (scale, digits) = match format.strip_prefix('%') {
        Some(d) => (100.0, d),
        None => (1.0, format),
    };
    let (digits, scientific) = match digits.strip_suffix('e') {
        Some(d) => (d, true),
        None => (digits, false),
    };
    let digits: usize = digits
        .strip_prefix('.')
        .and_then(|d| d.parse().ok())
        .with_context(|| format!("unknown format {format:?}: expected .N, .Ne, %.N, `,` or s"))?;
    Ok(if scientific {
        format!("{:.digits$e}", x * scale)
    } else {
        format!("{:.digits$}", x * scale)
    })
}

/// An integer with thousands separators.
fn thousands(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_filters_and_formats() {
        let doc = serde_json::json!({
            "rows": [
                {"model": "a.onnx", "steps": 1, "frechet": 109.644},
                {"model": "b.onnx", "steps": 1, "frechet": 103.07},
                {"model": "b.onnx", "steps": 2, "frechet": 54.66, "accuracy": 0.972},
            ]
        });
        let v = lookup(&doc, "/rows/[model~=b.,steps=2]/frechet").unwrap();
        assert_eq!(show(&v, ".1").unwrap(), "54.7");
        let v = lookup(&doc, "/rows/[model=b.onnx,steps=2]/accuracy").unwrap();
        assert_eq!(show(&v, "%.1").unwrap(), "97.2");
        assert_eq!(
            show(&lookup(&doc, "/rows/0/model").unwrap(), "s").unwrap(),
            "a.onnx"
        );
        assert!(lookup(&doc, "/rows/[model=c.onnx]/frechet").is_err());
        assert!(lookup(&doc, "/rows/7").is_err());
        assert!(show(&serde_json::json!("x"), ".2").is_err());
        assert_eq!(thousands(5_070_194), "5,070,194");
        assert_eq!(thousands(999), "999");
        assert_eq!(show(&serde_json::json!(12_434.0), ",").unwrap(), "12,434");
        assert_eq!(show(&serde_json::json!(1.84e-6), ".1e").unwrap(), "1.8e-6");
    }

    #[test]
    fn templates_render_and_bad_placeholders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.json"), r#"{"a": {"b": 2.5}, "c": 0.5}"#).unwrap();
        std::fs::write(dir.path().join("f.bin"), vec![0u8; 2048]).unwrap();
        let text = "x {{json m.json /a/b .2}} y {{ratio m.json /a/b m.json /c .1}} {{size f.bin}}";
        let out = render(text, dir.path()).unwrap();
        assert!(out.ends_with("x 2.50 y 5.0 2,048 B (0.0 MiB)"), "{out}");
        for bad in [
            "{{json m.json /z}}",
            "{{nope}}",
            "{{size missing}}",
            "{{json m.json /a .2",
            "{{json m.json /a/b %x}}",
        ] {
            assert!(render(bad, dir.path()).is_err(), "{bad}");
        }
    }
}
