//! The wasm runtime: one shared wasmtime `Engine`, compiled components cached
//! by the module's sha256, and job instances with a memory cap and a CPU
//! deadline per call. A guest that traps or hits a limit fails its own call;
//! it can never take the supervisor or another job down.

mod globals;
mod instance;
mod memory;
mod sandbox;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, OptLevel, Strategy};

use crate::spec::Grants;
use crate::wit::bindings;

/// What [`Instance::image`] gives: pages of a guest's memory.
pub use crate::checkpoint::image::Pages;
pub use instance::{GuestError, ImageError, Instance, Limits};
pub use memory::PAGE;
pub use validate::{validate_component, Cause, ModuleError};

/// A module that passed [`Runtime::check_for_deploy`], with the runtime
/// that compiled it.
pub struct Checked {
    runtime: Runtime,
    compiled: Compiled,
}

impl Checked {
    /// Whether its checkpoints can be memory images, and if not, why.
    pub fn memory_images(&self) -> Result<(), ImageError> {
        instance::memory_images_hold_all(self.compiled.mutable_globals)
    }

    /// Checks that the module starts within `limits` and `grants` (its
    /// initial memory fits, its granted directories open). What runs of
    /// it is only a start function, if it has one: a Rust job has none.
    pub async fn instantiate(&self, limits: Limits, grants: &Grants) -> Result<(), GuestError> {
        Instance::new(&self.runtime.engine, &self.compiled, "deploy-check", limits, grants, 0)
            .await
            .map(drop)
    }
}

/// A module compiled and linked, ready to instantiate.
#[derive(Clone)]
struct Compiled {
    pre: bindings::JobPre<instance::GuestState>,
    /// How many mutable globals its core modules define: a memory image
    /// holds its whole state only with at most one (`globals`).
    mutable_globals: usize,
}

/// How often the engine's epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The shared engine, linker and compile cache. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<instance::GuestState>>,
    compiled: Arc<Mutex<HashMap<String, Compiled>>>,
    /// Held while compiling, so that jobs starting together on one module
    /// compile it once rather than each.
    compiling: Arc<Mutex<()>>,
}

impl Runtime {
    /// Builds the engine and starts the thread that drives call deadlines.
    pub fn new() -> Result<Runtime, ModuleError> {
        Runtime::with_compiler(Strategy::Cranelift, OptLevel::Speed)
    }

    /// Checks that `bytes` is a weir job, as `weir deploy` needs, without
    /// caching it. The code is only type-checked and thrown away, so
    /// Winch, wasmtime's baseline compiler, compiles it (several times
    /// faster than unoptimised Cranelift: docs/BENCHMARKS.md); where Winch
    /// cannot (a proposal or instruction it lacks, a platform it does not
    /// support), unoptimised Cranelift does, so that only what the
    /// supervisors' Cranelift would refuse is refused. Only a compile error
    /// is retried: the others come of parsing the bytes or linking them
    /// against the world, the same whichever compiler ran.
    pub fn check_for_deploy(bytes: &[u8]) -> Result<Checked, ModuleError> {
        match Runtime::with_compiler(Strategy::Winch, OptLevel::None) {
            Ok(runtime) => match runtime.compile(bytes) {
                Err(ModuleError::Compile(e)) => {
                    tracing::debug!("Winch cannot compile the module, Cranelift checks it: {e}");
                }
                result => return result.map(|compiled| Checked { runtime, compiled }),
            },
            Err(e) => tracing::debug!("no Winch here, Cranelift checks the module: {e}"),
        }
        let runtime = Runtime::with_compiler(Strategy::Cranelift, OptLevel::None)?;
        let compiled = runtime.compile(bytes)?;
        Ok(Checked { runtime, compiled })
    }

    fn with_compiler(strategy: Strategy, opt_level: OptLevel) -> Result<Runtime, ModuleError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.strategy(strategy);
        // Under Winch, for the trampolines Cranelift still compiles.
        config.cranelift_opt_level(opt_level);
        // Memories weir maps itself, so a checkpoint can copy the pages a
        // job wrote; wasmtime's copy-on-write images need its own.
        config.with_host_memory(Arc::new(memory::HostMemories));
        config.memory_init_cow(false);
        // Lets `perf` name guest functions (writes /tmp/perf-<pid>.map).
        if std::env::var_os("WEIR_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| ModuleError::Engine(e.into()))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| ModuleError::Engine(e.into()))?;
        let linker = instance::linker(&engine).map_err(|e| ModuleError::Engine(e.into()))?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            compiled: Default::default(),
            compiling: Default::default(),
        })
    }

    /// Compiles and type-checks a component against the `weir:job/job` world.
    fn compile(&self, bytes: &[u8]) -> Result<Compiled, ModuleError> {
        validate_component(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(|e| ModuleError::Compile(e.into()))?;
        let mutable_globals = globals::mutable_globals(bytes).map_err(|e| ModuleError::Compile(e.into()))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            // An import of weir's own interfaces the linker lacks is a job
            // built against another version of the SDK, not a sandbox matter.
            if format!("{e:#}").contains("weir:job/") {
                ModuleError::WrongWorld(e.into())
            } else {
                ModuleError::Imports(e.into())
            }
        })?;
        let pre = bindings::JobPre::new(pre).map_err(|e| ModuleError::WrongWorld(e.into()))?;
        Ok(Compiled { pre, mutable_globals })
    }

    /// Whether the module with this digest is compiled already.
    pub fn is_compiled(&self, sha256: &str) -> bool {
        self.compiled.lock().expect("compile cache lock").contains_key(sha256)
    }

    /// Compiles `bytes` once per digest; later calls for the same digest are free.
    pub fn prepare(&self, sha256: &str, bytes: &[u8]) -> Result<(), ModuleError> {
        if self.is_compiled(sha256) {
            return Ok(());
        }
        let _one_compile_at_a_time = self.compiling.lock().expect("compile lock");
        if self.is_compiled(sha256) {
            return Ok(());
        }
        let actual = crate::storage::sha256_hex(bytes);
        if actual != sha256 {
            return Err(ModuleError::Digest {
                expected: sha256.to_string(),
                actual,
            });
        }
        let compiled = self.compile(bytes)?;
        self.compiled
            .lock()
            .expect("compile cache lock")
            .insert(sha256.to_string(), compiled);
        Ok(())
    }

    /// Instantiates a prepared module for job `job`, in a sandbox with `grants`.
    pub async fn instantiate(
        &self,
        sha256: &str,
        job: &str,
        limits: Limits,
        grants: &Grants,
        memory_len: usize,
    ) -> Result<Instance, GuestError> {
        let compiled = self
            .compiled
            .lock()
            .expect("compile cache lock")
            .get(sha256)
            .cloned()
            .ok_or_else(|| GuestError::NotCompiled {
                sha256: sha256.to_string(),
            })?;
        Instance::new(&self.engine, &compiled, job, limits, grants, memory_len).await
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A component holding one core module of `sections` (each under 128
    /// bytes), instantiated by nothing.
    pub(in crate::runtime) fn component_of(sections: &[(u8, &[u8])]) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        for (id, section) in sections {
            module.extend([*id, section.len() as u8]);
            module.extend(*section);
        }
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        component.extend([1, module.len() as u8]);
        component.extend(module);
        component
    }

    /// A component whose one function tail-calls itself: Winch lacks the
    /// tail-call proposal, Cranelift has it.
    fn tail_calling_component() -> Vec<u8> {
        component_of(&[
            (1, &[0x01, 0x60, 0x00, 0x00]),              // types: [] -> []
            (3, &[0x01, 0x00]),                          // one function of it
            (10, &[0x01, 0x04, 0x00, 0x12, 0x00, 0x0b]), // its body: `return_call 0`
        ])
    }

    #[test]
    fn what_winch_cannot_compile_cranelift_checks() {
        let bytes = tail_calling_component();
        let winch = Runtime::with_compiler(Strategy::Winch, OptLevel::None).unwrap();
        assert!(matches!(winch.compile(&bytes), Err(ModuleError::Compile(_))));
        // Cranelift compiles it; it is then refused for what it is.
        assert!(matches!(
            Runtime::check_for_deploy(&bytes),
            Err(ModuleError::WrongWorld(_))
        ));
    }
}
