//! Telling a user exactly why a file is not a weir job.

/// What wasmtime (or the OS) said, kept as the error's source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a module cannot run as a job; each message names the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header): build the job with `cargo build --target wasm32-wasip2 --release`")]
    NotWasm,
    /// A core module rather than a component.
    #[error("a core WebAssembly module, not a component: build the job for the `wasm32-wasip2` target, which emits components")]
    CoreModule,
    /// wasmtime could not compile it.
    #[error("the component does not compile")]
    Compile(#[source] Cause),
    /// It imports something weir does not grant.
    #[error("the component imports what weir does not grant (jobs get logging, the clock and WASI 0.2, reaching only what their deploy grants)")]
    Imports(#[source] Cause),
    /// A component of another world.
    #[error("the component is not a weir job of this version (world `weir:job/job@0.2.0`: build it against weir-guest 0.4 and export it with `weir_guest::export_job!`)")]
    WrongWorld(#[source] Cause),
    /// The bytes do not match the digest they were stored under.
    #[error("module digest mismatch: expected sha256 {expected}, got {actual}; the storage dir's copy is damaged, deploy the job again")]
    Digest {
        /// The digest the job spec names.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// The engine itself could not start.
    #[error("cannot start the wasm engine")]
    Engine(#[source] Cause),
}

/// Checks the header: `\0asm`, then a layer field that says module or component.
pub fn validate_component(bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleError::NotWasm);
    }
    // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
    if bytes[6..8] == [0, 0] {
        return Err(ModuleError::CoreModule);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_files_apart() {
        assert!(matches!(validate_component(b"hello world"), Err(ModuleError::NotWasm)));
        assert!(matches!(
            validate_component(b"\0asm\x01\0\0\0"),
            Err(ModuleError::CoreModule)
        ));
        assert!(validate_component(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
