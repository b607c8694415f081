//! Every configuration key, read off the config types themselves (for the reference doc).
//!
//! `docs/configuration.md` lists every key; a test compares it with the lists made here,
//! so the doc cannot drift from the code. The lists are not written by hand: a recording
//! [`Deserializer`] drives each type's own `Deserialize` impl and writes down the field
//! names serde hands to `deserialize_struct`, so a renamed, added or removed field shows
//! up at once.
//!
//! How the walk answers each request:
//! - **struct**: every field is recorded as `prefix.field`, then offered to the visitor
//!   as a map entry whose value is walked under `prefix.field`;
//! - **enum**: a variant with content (`queue.mem`, `queue.disk`) is recorded and its
//!   content walked; the whole type is walked again until every variant of every enum
//!   reached has been taken once. A unit variant (`durability: batch`) is a value, not
//!   a key, so an enum of unit variants is a leaf;
//! - **`Option<T>`** walks `T`; a **sequence** walks one element under `prefix[]`
//!   (`units[].id`);
//! - **leaves** get a dummy value their parser accepts: `"0s"` when a string is asked
//!   for (so [`HumanDuration`](super::HumanDuration) parses), `"0"` when any value is
//!   asked for (so [`ByteSize`](super::ByteSize) and [`Secret`](super::Secret) parse),
//!   0, false, an empty map.
//!
//! Keys read by hand rather than by serde are the two named in [`HAND_READ_KEYS`]: the
//! output block's `type` and the standalone file's `server`. Aliases (`worker` for
//! `workers`) are not listed: serde passes them in `fields`, but offering an alias and
//! its field both is refused as a duplicate, which tells the walk which name is the
//! alias (see `Walk::learn_alias`).

use serde::de::{
    self, value::Error, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};
use serde::Deserializer;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

/// Keys no serde type describes because the parsers read them by hand:
/// `(group, key)` with the groups of [`reference_groups`].
pub const HAND_READ_KEYS: &[(&str, &str)] = &[
    ("output", super::output::TYPE_KEY),
    ("standalone", super::standalone::SERVER_KEY),
];

/// The keys of one walk, or why the walk stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("walking the config type stopped: {reason}")]
pub struct WalkError {
    /// serde's message (a leaf refused its dummy value, or an unexpected request).
    pub reason: String,
    /// The keys recorded before the walk stopped.
    pub recorded: Vec<String>,
}

/// The dotted paths of every key `T` accepts, sorted.
///
/// # Errors
/// A [`WalkError`] when `T`'s `Deserialize` impl refuses the walk's dummy values; the
/// keys recorded up to then come with it.
pub fn try_keys_of<T: DeserializeOwned>() -> Result<Vec<String>, WalkError> {
    let walk = Walk::default();
    // One more pass per enum variant and per alias; 64 passes cover far more than ours.
    for _ in 0..64 {
        walk.again.set(false);
        let result = T::deserialize(Recorder {
            walk: &walk,
            prefix: String::new(),
        });
        match result {
            Err(_) if walk.again.get() => continue,
            Err(err) => {
                return Err(WalkError {
                    reason: err.to_string(),
                    recorded: walk.into_keys(),
                })
            }
            Ok(_) if walk.has_unvisited_variants() => continue,
            Ok(_) => break,
        }
    }
    Ok(walk.into_keys())
}

/// [`try_keys_of`], keeping what was recorded if the walk stops early (a unit test
/// makes sure it does not for the config types).
pub fn keys_of<T: DeserializeOwned>() -> Vec<String> {
    try_keys_of::<T>().unwrap_or_else(|err| err.recorded)
}

/// Keys every output type accepts: `type` (read by hand), `queue.*` and `dlq.*`.
pub fn output_keys() -> Vec<String> {
    let mut keys = keys_of::<super::output::SharedKeys>();
    keys.extend(hand_read("output"));
    keys.sort();
    keys
}

/// Keys of `type: file`, beside [`output_keys`].
pub fn file_output_keys() -> Vec<String> {
    keys_of::<super::FileOutputConfig>()
}

/// Keys of `type: elasticsearch`, beside [`output_keys`].
pub fn elasticsearch_output_keys() -> Vec<String> {
    keys_of::<super::ElasticsearchConfig>()
}

/// Keys only a standalone file has, beside the output block's: `server`.
pub fn standalone_keys() -> Vec<String> {
    hand_read("standalone")
}

fn hand_read(group: &str) -> Vec<String> {
    HAND_READ_KEYS
        .iter()
        .filter(|(of, _)| *of == group)
        .map(|(_, key)| key.to_string())
        .collect()
}

/// Keys of the INPUT unit's block.
pub fn input_keys() -> Vec<String> {
    keys_of::<super::InputUnitConfig>()
}

/// The process-wide `-E key=value` settings.
pub fn process_keys() -> Vec<String> {
    super::ProcessSettings::KNOWN_KEYS
        .iter()
        .map(|key| key.to_string())
        .collect()
}

/// Every group of keys as the reference doc labels it: `output`, `file`,
/// `elasticsearch`, `standalone`, `input`, `process`.
pub fn reference_groups() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("output", output_keys()),
        ("file", file_output_keys()),
        ("elasticsearch", elasticsearch_output_keys()),
        ("standalone", standalone_keys()),
        ("input", input_keys()),
        ("process", process_keys()),
    ]
}

/// What a walk has found so far; shared by every recorder of one walk.
#[derive(Default)]
struct Walk {
    keys: RefCell<BTreeSet<String>>,
    /// Per enum path: for each variant, whether it has been picked already.
    enums: RefCell<BTreeMap<String, Vec<bool>>>,
    /// Paths of field names found to be aliases: not offered again, not listed.
    aliases: RefCell<BTreeSet<String>>,
    /// Paths of field names found to be the name an alias stands for: offered first.
    canonical: RefCell<BTreeSet<String>>,
    /// Per struct path, the field name offered last (the one a duplicate error is about).
    last_field: RefCell<BTreeMap<String, &'static str>>,
    /// Set when a pass stopped to learn an alias; the walk then starts again.
    again: Cell<bool>,
}

impl Walk {
    /// The recorded keys, aliases left out, sorted.
    fn into_keys(self) -> Vec<String> {
        let aliases = self.aliases.into_inner();
        self.keys
            .into_inner()
            .into_iter()
            .filter(|key| !aliases.contains(key))
            .collect()
    }

    fn record(&self, key: String) {
        self.keys.borrow_mut().insert(key);
    }

    /// The variant to take at `path`: the first not taken yet; once all were taken, one
    /// whose content still holds an enum with a variant not taken; else the first.
    fn pick_variant(&self, path: &str, variants: &[&str]) -> usize {
        let mut enums = self.enums.borrow_mut();
        let seen = enums
            .entry(path.to_string())
            .or_insert_with(|| vec![false; variants.len()]);
        if let Some(index) = seen.iter().position(|taken| !taken) {
            seen[index] = true;
            return index;
        }
        let unfinished = |inside: &str| {
            enums.iter().any(|(other, seen)| {
                let nested = other
                    .strip_prefix(inside)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
                nested && other != path && seen.iter().any(|taken| !taken)
            })
        };
        variants
            .iter()
            .position(|variant| unfinished(&join(path, variant)))
            .unwrap_or(0)
    }

    /// The fields to offer at `prefix`: known canonical names first, aliases left out.
    fn field_order(&self, prefix: &str, fields: &[&'static str]) -> Vec<&'static str> {
        let aliases = self.aliases.borrow();
        let canonical = self.canonical.borrow();
        let mut order: Vec<&'static str> = fields
            .iter()
            .copied()
            .filter(|field| !aliases.contains(&join(prefix, field)))
            .collect();
        order.sort_by_key(|field| !canonical.contains(&join(prefix, field)));
        order
    }

    /// Serde puts aliases in `fields` too (`worker` beside `workers`), and offering both
    /// makes the struct's visitor refuse a duplicate field. Such an error names the
    /// canonical field: if the field offered last is another name, it is the alias;
    /// else the alias came earlier and the canonical name goes first next time. Either
    /// way the walk starts again, and the error is renamed so that enclosing structs do
    /// not take it for their own.
    fn learn_alias(&self, prefix: &str, err: Error) -> Error {
        let message = err.to_string();
        let Some(name) = message
            .strip_prefix("duplicate field `")
            .and_then(|rest| rest.strip_suffix('`'))
        else {
            return err;
        };
        let last = self.last_field.borrow().get(prefix).copied();
        match last {
            Some(last) if last != name => {
                self.aliases.borrow_mut().insert(join(prefix, last));
            }
            _ => {
                self.canonical.borrow_mut().insert(join(prefix, name));
            }
        }
        self.again.set(true);
        de::Error::custom(format!(
            "alias of `{}` found; walking again",
            join(prefix, name)
        ))
    }

    fn has_unvisited_variants(&self) -> bool {
        self.enums
            .borrow()
            .values()
            .any(|seen| seen.iter().any(|taken| !taken))
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The recording deserializer for the value at `prefix`.
struct Recorder<'w> {
    walk: &'w Walk,
    prefix: String,
}

impl<'w> Recorder<'w> {
    fn child(&self, prefix: String) -> Recorder<'w> {
        Recorder {
            walk: self.walk,
            prefix,
        }
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.$visit($($value)?)
        })*
    };
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Error;

    leaf! {
        deserialize_any => visit_str("0"),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('0'),
        deserialize_str => visit_str("0s"),
        deserialize_string => visit_str("0s"),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let element = self.child(format!("{}[]", self.prefix));
        visitor.visit_seq(Elements {
            left: 1,
            element: Some(element),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let element = self.child(format!("{}[]", self.prefix));
        visitor.visit_seq(Elements {
            left: len,
            element: Some(element),
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // A free-form map (a `serde_json::Value` object, a HashMap) has no keys to list.
        visitor.visit_map(Fields {
            recorder: self,
            fields: Vec::new(),
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        for field in fields {
            self.walk.record(join(&self.prefix, field));
        }
        let prefix = self.prefix.clone();
        let walk = self.walk;
        let fields = walk.field_order(&prefix, fields);
        let result = visitor.visit_map(Fields {
            recorder: self,
            fields,
            next: 0,
        });
        match result {
            Err(err) => Err(walk.learn_alias(&prefix, err)),
            ok => ok,
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let index = self.walk.pick_variant(&self.prefix, variants);
        let Some(variant) = variants.get(index) else {
            return Err(de::Error::custom(format!(
                "enum at `{}` has no variants",
                self.prefix
            )));
        };
        visitor.visit_enum(Variant {
            recorder: self,
            variant,
        })
    }
}

/// A struct's fields as map entries; each value is walked under `prefix.field`.
struct Fields<'w> {
    recorder: Recorder<'w>,
    fields: Vec<&'static str>,
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.get(self.next).copied() else {
            return Ok(None);
        };
        self.recorder
            .walk
            .last_field
            .borrow_mut()
            .insert(self.recorder.prefix.clone(), field);
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self.fields.get(self.next).copied().unwrap_or_default();
        self.next += 1;
        seed.deserialize(self.recorder.child(join(&self.recorder.prefix, field)))
    }
}

/// A sequence of `left` elements, each walked under `prefix[]`.
struct Elements<'w> {
    left: usize,
    element: Option<Recorder<'w>>,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        match &self.element {
            Some(element) => seed
                .deserialize(element.child(element.prefix.clone()))
                .map(Some),
            None => Ok(None),
        }
    }
}

/// The variant picked for an enum at `prefix`.
struct Variant<'w> {
    recorder: Recorder<'w>,
    variant: &'static str,
}

impl<'de, 'w> EnumAccess<'de> for Variant<'w> {
    type Error = Error;
    type Variant = Variant<'w>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let value = seed.deserialize(self.variant.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        // A unit variant (`durability: batch`) is a value, not a key.
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let path = join(&self.recorder.prefix, self.variant);
        self.recorder.walk.record(path.clone());
        seed.deserialize(self.recorder.child(path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let path = join(&self.recorder.prefix, self.variant);
        self.recorder.walk.record(path.clone());
        self.recorder.child(path).deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = join(&self.recorder.prefix, self.variant);
        self.recorder.walk.record(path.clone());
        self.recorder
            .child(path)
            .deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn every_config_type_walks_to_the_end() {
        // keys_of keeps a partial list on error; make sure no config type needs that.
        fn complete<T: DeserializeOwned>(name: &str) {
            if let Err(err) = try_keys_of::<T>() {
                panic!("{name}: {err}; recorded only {:?}", err.recorded);
            }
        }
        complete::<super::super::output::SharedKeys>("SharedKeys");
        complete::<super::super::FileOutputConfig>("FileOutputConfig");
        complete::<super::super::ElasticsearchConfig>("ElasticsearchConfig");
        complete::<super::super::InputUnitConfig>("InputUnitConfig");
    }

    #[test]
    fn nested_structs_enum_variants_options_and_sequences_are_walked() {
        let output = output_keys();
        for key in [
            "type",
            "queue",
            "queue.mem",
            "queue.mem.events",
            "queue.disk",
            "queue.disk.max_size",
            "queue.disk.durability",
            "dlq.retain",
            "dlq.retain.age",
        ] {
            assert!(output.contains(&key.to_string()), "{key} not in {output:?}");
        }
        // A unit-variant enum is a leaf, not a group of keys.
        assert!(!output
            .iter()
            .any(|key| key.starts_with("queue.disk.durability.")));
        let es = elasticsearch_output_keys();
        for key in [
            "ssl.verification_mode",
            "backoff.init",
            "workers",
            "api_key",
        ] {
            assert!(es.contains(&key.to_string()), "{key} not in {es:?}");
        }
        assert!(
            !es.contains(&"worker".to_string()),
            "aliases are not keys: {es:?}"
        );
        let input = input_keys();
        for key in [
            "type",
            "units",
            "units[].id",
            "units[].config",
            "drain_timeout",
        ] {
            assert!(input.contains(&key.to_string()), "{key} not in {input:?}");
        }
    }

    #[test]
    fn a_leaf_that_refuses_the_dummy_value_is_reported_with_what_was_recorded() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Picky {
            before: u32,
            #[serde(deserialize_with = "refuse")]
            picky: u32,
            after: u32,
        }
        fn refuse<'de, D: Deserializer<'de>>(_: D) -> Result<u32, D::Error> {
            Err(de::Error::custom("no dummy for me"))
        }
        let err = try_keys_of::<Picky>().unwrap_err();
        assert!(err.reason.contains("no dummy for me"), "{err}");
        assert_eq!(err.recorded, ["after", "before", "picky"]);
        assert_eq!(keys_of::<Picky>(), ["after", "before", "picky"]);
    }

    #[test]
    fn aliases_are_left_out_and_do_not_stop_the_walk() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Aliased {
            #[serde(alias = "worker")]
            workers: u8,
            #[serde(alias = "nested_old")]
            nested: Inner,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            #[serde(alias = "a", alias = "b")]
            c: u8,
        }
        assert_eq!(
            try_keys_of::<Aliased>().unwrap(),
            ["nested", "nested.c", "workers"]
        );
    }

    #[test]
    fn every_variant_of_nested_enums_is_visited() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum Inner {
            #[serde(rename = "x")]
            X { x1: u8 },
            #[serde(rename = "y")]
            Y(Vec<Leaf>),
            #[serde(rename = "z")]
            Z,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Leaf {
            name: String,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum Outer {
            #[serde(rename = "a")]
            A(Inner),
            #[serde(rename = "b")]
            B(Option<Inner>),
        }
        let keys = keys_of::<Outer>();
        assert_eq!(
            keys,
            [
                "a",
                "a.x",
                "a.x.x1",
                "a.y",
                "a.y[].name",
                "b",
                "b.x",
                "b.x.x1",
                "b.y",
                "b.y[].name"
            ],
            "{keys:?}"
        );
    }
}
