//! Unknown config keys: every one in the file, each with its full path and a "did you mean" when
//! a known key is close.
//!
//! Serde's `deny_unknown_fields` stops at the first unknown key, so the config structs accept
//! unknown keys and the loader refuses them instead, all at once. Two passes find them:
//! [`walk`] compares the parsed TOML with the keys each section's struct declares (asked of serde
//! itself, renames included), which also covers `[camera.source]`, whose variant struct serde
//! picks by `kind` (an internally tagged enum hides its keys from `serde_ignored`); and the typed
//! parse reports every key serde ignored (`serde_ignored`), a safety net for any section `walk`
//! has no schema for.

use super::validate::ConfigError;
use super::{
    AdminConfig, ApiConfig, ArchiveConfig, CameraConfig, CommandConfig, FolderSourceConfig, LineConfig, ModbusConfig,
    ModelConfig, ModelTeachConfig, MqttConfig, OpencvSourceConfig, OutputsConfig, PipelineConfig, RegisterMap,
    RuleConfig, StationConfig, StationSection, StoreConfig, SyntheticSourceConfig, WebhookConfig,
};
use serde::de::{self, DeserializeOwned, Visitor};
use std::fmt;

/// One step of a key's path: a key in a table, or an index in an array of tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// A path as the errors write it: `camera[0].source.nonsense_key`.
pub(super) fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// `serde_ignored`'s path as steps (the `Option` and newtype levels add no key).
pub(super) fn steps(path: &serde_ignored::Path) -> Vec<Step> {
    let (parent, step) = match path {
        serde_ignored::Path::Root => return Vec::new(),
        serde_ignored::Path::Seq { parent, index } => (parent, Some(Step::Index(*index))),
        serde_ignored::Path::Map { parent, key } => (parent, Some(Step::Key(key.clone()))),
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => (parent, None),
    };
    let mut out = steps(parent);
    out.extend(step);
    out
}

/// The value at `path` in `table`, if there is one.
pub(super) fn lookup<'a>(table: &'a toml::Table, path: &[Step]) -> Option<&'a toml::Value> {
    let (Step::Key(first), rest) = path.split_first()? else { return None };
    let mut value = table.get(first)?;
    for step in rest {
        value = match step {
            Step::Key(k) => value.as_table()?.get(k)?,
            Step::Index(i) => value.as_array()?.get(*i)?,
        };
    }
    Some(value)
}

/// Every unknown key in `table` (the whole config file), by key within each section.
pub(super) fn walk(table: &toml::Table) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    walk_table(table, &mut Vec::new(), &mut errors);
    errors
}

fn walk_table(table: &toml::Table, path: &mut Vec<Step>, errors: &mut Vec<ConfigError>) {
    let Some(known) = known_keys(path, table) else { return };
    for (key, value) in table {
        path.push(Step::Key(key.clone()));
        if known.contains(&key.as_str()) {
            match value {
                toml::Value::Table(t) => walk_table(t, path, errors),
                toml::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let toml::Value::Table(t) = item {
                            path.push(Step::Index(i));
                            walk_table(t, path, errors);
                            path.pop();
                        }
                    }
                }
                _ => {}
            }
        } else {
            errors.push(unknown(path, Some(value), Some(&known)));
        }
        path.pop();
    }
}

/// The error for the unknown key at `path`; `known`: the keys its section takes, when known.
pub(super) fn unknown(path: &[Step], value: Option<&toml::Value>, known: Option<&[&str]>) -> ConfigError {
    let key = match path.last() {
        Some(Step::Key(k)) => k.as_str(),
        _ => "",
    };
    let section = match display(&path[..path.len().saturating_sub(1)]) {
        s if s.is_empty() => "the top level".to_string(),
        s => format!("[{s}]"),
    };
    let problem = match known.map(|k| (k, closest(key, k))) {
        Some((_, Some(close))) => format!("unknown key in {section}: did you mean `{close}`?"),
        Some((known, None)) => {
            format!("unknown key in {section}: remove it, or use one of {}", known.join(", "))
        }
        None => format!("unknown key in {section}: remove it (see the README's configuration table)"),
    };
    ConfigError { path: display(path), value: value.map_or_else(|| "…".into(), short), problem }
}

/// A value as written, cut short (a whole misnamed section can be long).
fn short(value: &toml::Value) -> String {
    let text = match value {
        toml::Value::Table(_) => "{ … }".to_string(),
        other => other.to_string(),
    };
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The known key most like `key`, if one is close enough to be a likely typo.
pub(super) fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| {
            // Jaro-Winkler catches dropped and swapped letters in longer keys, the edit distance
            // a slip in a short one (`fsp`), containment a key written without its prefix
            // (`threads` for `intra_threads`) or with an extra suffix (`cameras`).
            let mut score = strsim::jaro_winkler(&key, k);
            if strsim::osa_distance(&key, k) <= (key.len() / 4).max(1) {
                score = score.max(0.85);
            }
            if key.len() >= 4 && k.len() >= 4 && (k.contains(key.as_str()) || key.contains(k)) {
                score = score.max(0.9);
            }
            (score, *k)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// The keys the section at `path` takes (array indices ignored), or `None` where `path` is not a
/// section (a table-valued setting, or a part of the file serde reports itself).
fn known_keys(path: &[Step], table: &toml::Table) -> Option<Vec<&'static str>> {
    let keys: Vec<&str> =
        path.iter().filter_map(|s| if let Step::Key(k) = s { Some(k.as_str()) } else { None }).collect();
    let fields = match keys.as_slice() {
        [] => fields_of::<StationConfig>(),
        ["station"] => fields_of::<StationSection>(),
        ["camera"] => fields_of::<CameraConfig>(),
        ["camera", "source"] => {
            let variant = match table.get("kind").and_then(toml::Value::as_str) {
                Some("synthetic") => fields_of::<SyntheticSourceConfig>(),
                Some("folder") => fields_of::<FolderSourceConfig>(),
                Some("opencv") => fields_of::<OpencvSourceConfig>(),
                // A missing or unknown kind is the typed parse's error.
                _ => return None,
            };
            return Some([&["kind"][..], variant].concat());
        }
        ["model"] => fields_of::<ModelConfig>(),
        ["model", "teach"] => fields_of::<ModelTeachConfig>(),
        ["pipeline"] => fields_of::<PipelineConfig>(),
        ["rule"] => fields_of::<RuleConfig>(),
        ["outputs"] => fields_of::<OutputsConfig>(),
        ["admin"] => fields_of::<AdminConfig>(),
        ["store"] => fields_of::<StoreConfig>(),
        ["api"] => fields_of::<ApiConfig>(),
        ["api", "tokens"] => fields_of::<super::ApiToken>(),
        ["recipe"] => fields_of::<super::RecipeConfig>(),
        ["recipe", "teach"] => fields_of::<ModelTeachConfig>(),
        ["recipe", "rule"] => fields_of::<RuleConfig>(),
        ["archive"] => fields_of::<ArchiveConfig>(),
        ["line"] => fields_of::<LineConfig>(),
        ["line", "modbus"] => fields_of::<ModbusConfig>(),
        ["line", "modbus", "map"] => fields_of::<RegisterMap>(),
        ["line", "mqtt"] => fields_of::<MqttConfig>(),
        ["line", "webhook"] => fields_of::<WebhookConfig>(),
        ["line", "command"] => fields_of::<CommandConfig>(),
        _ => return None,
    };
    Some(fields.to_vec())
}

/// The keys a struct's derived `Deserialize` accepts, as serde itself lists them (renames
/// applied): a deserializer that asks for nothing but that list.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldsProbe) {
        Err(Probed(Some(fields))) => fields,
        _ => &[],
    }
}

struct FieldsProbe;

#[derive(Debug)]
struct Probed(Option<&'static [&'static str]>);

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed(None)
    }
}

impl<'de> de::Deserializer<'de> for FieldsProbe {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_lists_each_sections_keys_with_renames() {
        let top = fields_of::<StationConfig>();
        assert!(top.contains(&"camera") && top.contains(&"rule") && !top.contains(&"cameras"), "{top:?}");
        assert!(fields_of::<FolderSourceConfig>().contains(&"looping"));
    }

    #[test]
    fn close_keys_are_suggested_and_far_ones_are_not() {
        let camera = fields_of::<CameraConfig>();
        assert_eq!(closest("fsp", camera), Some("fps"));
        assert_eq!(closest("queue_dept", camera), Some("queue_depth"));
        assert_eq!(closest("nonsense_key", camera), None);
        assert_eq!(closest("threads", fields_of::<ModelConfig>()), Some("intra_threads"));
        assert_eq!(closest("cameras", fields_of::<StationConfig>()), Some("camera"));
    }
}
