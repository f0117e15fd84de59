//! Writes structured inputs as the bytes `arbitrary` reads them back from, so the session
//! targets get seeds made of meaningful scenarios.
//!
//! The layout is that of `arbitrary` 1.x's derive (pinned by `fuzz/Cargo.lock`): integers are
//! little-endian, a `bool` is one byte, an `Option` is a `bool` then the value, a `Vec` is
//! each element behind a `true` byte then a `false` byte, an enum is a `u32` tag `t` selecting
//! variant `(t * variants) >> 32`, then its fields in order. The session targets read their
//! operations one by one until the input ends, so there is no length prefix. `tests/seeds.rs`
//! checks that every seed reads back as the scenario it was written from, which catches any
//! change of layout.

/// A value that can be written in `arbitrary`'s layout.
pub trait Encode {
    /// Appends the bytes that `Arbitrary::arbitrary` reads back as `self`.
    fn encode(&self, out: &mut Vec<u8>);
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
int!(u8, u16, u32, u64);

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.is_some().encode(out);
        if let Some(value) = self {
            value.encode(out);
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    /// `arbitrary`'s `Vec`: each element behind a `true` byte, then a `false` byte.
    fn encode(&self, out: &mut Vec<u8>) {
        for item in self {
            true.encode(out);
            item.encode(out);
        }
        false.encode(out);
    }
}

/// Writes the tag of variant `index` of an enum of `count` variants.
pub fn tag(out: &mut Vec<u8>, index: u32, count: u32) {
    debug_assert!(index < count);
    // The smallest `t` with `(t * count) >> 32 == index`.
    let t = (u64::from(index) << 32).div_ceil(u64::from(count));
    let t = u32::try_from(t).unwrap_or(u32::MAX);
    t.encode(out);
}

/// Writes a whole input: the setup, then each operation.
pub fn input<S: Encode, O: Encode>(setup: &S, ops: &[O]) -> Vec<u8> {
    let mut out = Vec::new();
    setup.encode(&mut out);
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// `impl Encode` for an enum: `encode_enum!(Type, count; Variant { a, b } => 0, Unit => 1)`.
#[macro_export]
macro_rules! encode_enum {
    ($ty:ident, $count:expr; $($variant:ident $({ $($field:ident),* })? => $index:expr),* $(,)?) => {
        impl $crate::encode::Encode for $ty {
            fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    $($ty::$variant $({ $($field),* })? => {
                        $crate::encode::tag(out, $index, $count);
                        $($( $crate::encode::Encode::encode($field, out); )*)?
                    })*
                }
            }
        }
    };
}

/// `impl Encode` for a struct: `encode_struct!(Type { a, b, c })`, fields in declaration order.
#[macro_export]
macro_rules! encode_struct {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $crate::encode::Encode for $ty {
            fn encode(&self, out: &mut Vec<u8>) {
                $( $crate::encode::Encode::encode(&self.$field, out); )*
            }
        }
    };
}
