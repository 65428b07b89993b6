//! The mutable globals a component's core modules define: the one part of
//! a guest's state between calls that is not in its linear memory.
//!
//! A Rust guest has one, LLVM's shadow stack pointer, which every export
//! puts back where it found it before returning; so its memory is its
//! whole state and a memory image restores it. Any other mutable global
//! (a heap pointer, TLS base or the like, from another toolchain) would
//! come back at its initial value while the memory holds the state that
//! followed from a later one, so such a guest gets the SDK's snapshots.

use wasmparser::{Parser, Payload};

/// How many mutable globals the core modules of `component` define, nested
/// components' included.
pub fn mutable_globals(component: &[u8]) -> Result<usize, wasmparser::BinaryReaderError> {
    let mut count = 0;
    for payload in Parser::new(0).parse_all(component) {
        if let Payload::GlobalSection(globals) = payload? {
            for global in globals {
                count += usize::from(global?.ty.mutable);
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component holding one core module whose global section is `globals`
    /// (each an i32, mutable or not, initialised to 0).
    fn component_with_globals(globals: &[bool]) -> Vec<u8> {
        let mut section = vec![globals.len() as u8];
        for &mutable in globals {
            // i32, mutability, `i32.const 0`, `end`.
            section.extend([0x7f, u8::from(mutable), 0x41, 0x00, 0x0b]);
        }
        crate::runtime::tests::component_of(&[(6, &section)])
    }

    #[test]
    fn counts_the_mutable_globals_of_every_core_module() {
        assert_eq!(mutable_globals(&component_with_globals(&[])).unwrap(), 0);
        assert_eq!(
            mutable_globals(&component_with_globals(&[true, false, false])).unwrap(),
            1
        );
        assert_eq!(
            mutable_globals(&component_with_globals(&[true, false, true])).unwrap(),
            2
        );
        let mut truncated = component_with_globals(&[true, true]);
        truncated.pop();
        assert!(mutable_globals(&truncated).is_err());
    }
}
