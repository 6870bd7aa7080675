//! JSON read straight into what the request path needs, with every list
//! bounded as it is read.
//!
//! A REST body parsed into `serde_json::Value` first holds about 40 times
//! its text (a 64 MB body of `[0],[0],...` made 2.8 GB); these readers
//! hold tensor values as `f32` (at most 2 bytes of JSON each: 2x), refuse a
//! list of tensors, dimensions or parameters past its bound at the entry
//! that crosses it, and keep of a parameter only a scalar, so that nothing
//! a legal body can say costs more than a small multiple of its length.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// A list of at most `N` entries, refused at the entry past `N`.
pub(crate) fn at_most<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {N} entries")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == N {
                    return Err(de::Error::custom(format_args!(
                        "more than {N} entries, more than any model takes"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded::<T, N>(PhantomData))
}

/// A parameter's value: a scalar, as KServe parameters are. Strings are
/// kept to their first [`Scalar::SHOWN`] characters (they only ever appear
/// in an error).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Signed(i64),
    /// Any other number.
    Float(f64),
    /// A string, cut short.
    Text(String),
}

impl Scalar {
    /// Characters of a string parameter kept.
    pub(crate) const SHOWN: usize = 64;

    /// The value as a non-negative integer.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Scalar::Unsigned(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Unsigned(v) => write!(f, "{v}"),
            Scalar::Signed(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v}"),
            Scalar::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a parameter value: a boolean, a number or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(match u64::try_from(v) {
                    Ok(u) => Scalar::Unsigned(u),
                    Err(_) => Scalar::Signed(v),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.chars().take(Scalar::SHOWN).collect()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A tensor's `data`: nested arrays of numbers, flattened row-major into
/// `f32` as they are read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Numbers {
    /// The values.
    pub(crate) values: Vec<f32>,
    /// The first value that is not an integer from 0 to `u32::MAX`, as
    /// written (a UINT8 tensor refuses it).
    pub(crate) not_unsigned: Option<String>,
}

impl Numbers {
    /// The values as unsigned integers, or the first that is not one.
    pub(crate) fn unsigned(&self) -> Result<Vec<u32>, NotUnsigned> {
        match &self.not_unsigned {
            Some(v) => Err(NotUnsigned(v.clone())),
            None => Ok(self.values.iter().map(|v| *v as u32).collect()),
        }
    }

    fn push(&mut self, v: f32, unsigned: Result<(), NotUnsigned>) {
        if let (Err(NotUnsigned(shown)), None) = (unsigned, &self.not_unsigned) {
            self.not_unsigned = Some(shown);
        }
        self.values.push(v);
    }
}

/// A value that is not an integer from 0 to `u32::MAX`, as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not an unsigned integer")]
pub(crate) struct NotUnsigned(pub String);

impl NotUnsigned {
    fn of(v: impl ToString) -> Self {
        NotUnsigned(v.to_string())
    }
}

impl<'de> Deserialize<'de> for Numbers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Numbers::default();
        Into(&mut out).deserialize(d)?;
        Ok(out)
    }
}

/// Reads one value or nested array into the [`Numbers`] it borrows.
struct Into<'n>(&'n mut Numbers);

impl<'de> DeserializeSeed<'de> for Into<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Into<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers, or nested arrays of numbers")
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let fits = u32::try_from(v).map(|_| ()).map_err(|_| NotUnsigned::of(v));
        self.0.push(v as f32, fits);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let fits = u32::try_from(v).map(|_| ()).map_err(|_| NotUnsigned::of(v));
        self.0.push(v as f32, fits);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(v as f32, Err(NotUnsigned::of(v)));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Into(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let shown: String = v.chars().take(Scalar::SHOWN).collect();
        Err(E::custom(format_args!("{shown:?} is not a valid value")))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        Err(E::custom(format_args!("{v} is not a valid value")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom("null is not a valid value"))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom("an object is not a valid value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_numbers_read_the_same_and_bad_values_are_named() {
        let flat: Numbers = serde_json::from_str("[1, 2, 3.5, 4]").unwrap();
        let nested: Numbers = serde_json::from_str("[[[1, 2], [3.5, 4]]]").unwrap();
        assert_eq!(flat.values, [1.0, 2.0, 3.5, 4.0]);
        assert_eq!(flat, nested);
        assert_eq!(flat.unsigned(), Err(NotUnsigned("3.5".to_string())));
        let ints: Numbers = serde_json::from_str("[0, 255, 4294967295]").unwrap();
        assert_eq!(ints.unsigned().unwrap()[..2], [0, 255]);
        let neg: Numbers = serde_json::from_str("[1, -1]").unwrap();
        assert_eq!(neg.unsigned(), Err(NotUnsigned("-1".to_string())));
        for (bad, says) in [
            (r#"[1, "a"]"#, r#""a" is not a valid value"#),
            ("[true]", "true is not a valid value"),
            ("[null]", "null is not a valid value"),
            (r#"[{"x": 1}]"#, "an object is not a valid value"),
        ] {
            let e = serde_json::from_str::<Numbers>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn lists_past_their_bound_are_refused_at_the_entry_that_crosses_it() {
        #[derive(Debug, Deserialize)]
        struct Two {
            #[serde(deserialize_with = "at_most::<_, i64, 2>")]
            v: Vec<i64>,
        }
        assert_eq!(
            serde_json::from_str::<Two>(r#"{"v":[1,2]}"#).unwrap().v,
            [1, 2]
        );
        let e = serde_json::from_str::<Two>(r#"{"v":[1,2,3]}"#).unwrap_err();
        assert!(e.to_string().contains("more than 2 entries"), "{e}");
        let e = serde_json::from_str::<Two>(r#"{"v":5}"#).unwrap_err();
        assert!(e.to_string().contains("a list of at most 2 entries"), "{e}");
        // Refused at the third entry: the rest is never read (it is not JSON).
        let e = serde_json::from_str::<Two>(r#"{"v":[1,2,3,!!!"#).unwrap_err();
        assert!(e.to_string().contains("more than 2 entries"), "{e}");
    }

    #[test]
    fn parameters_keep_scalars_only_and_strings_cut_short() {
        let s: Scalar = serde_json::from_str(&format!("{:?}", "x".repeat(1000))).unwrap();
        assert_eq!(s, Scalar::Text("x".repeat(Scalar::SHOWN)));
        assert_eq!(
            serde_json::from_str::<Scalar>("-3").unwrap(),
            Scalar::Signed(-3)
        );
        assert_eq!(
            serde_json::from_str::<Scalar>("7").unwrap().as_u64(),
            Some(7)
        );
        assert_eq!(Scalar::Bool(false).as_bool(), Some(false));
        assert_eq!(Scalar::Unsigned(1).as_bool(), None);
        assert_eq!(Scalar::Bool(true).as_u64(), None);
        // As an error shows them.
        let shown: Vec<String> = [
            Scalar::Bool(true),
            Scalar::Unsigned(7),
            Scalar::Signed(-3),
            Scalar::Float(0.5),
            Scalar::Text("a b".into()),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(shown, ["true", "7", "-3", "0.5", "\"a b\""]);
        let e = serde_json::from_str::<Scalar>("[1]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a boolean, a number or a string"), "{e}");
        assert!(serde_json::from_str::<Scalar>(r#"{"a":1}"#).is_err());
    }
}
