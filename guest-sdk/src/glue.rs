//! The glue [`crate::export_job!`] wires to the component's exports: the
//! component's one [`Instance`] of the job, handed each call.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::RefCell;

use crate::bindings::weir::job::types::{Batch, Output};
use crate::instance::Instance;
use crate::Job;

thread_local! {
    /// The one instance of the exported job. A component instance is
    /// single-threaded, so a thread-local is the whole of its memory.
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_instance<J: Job, R>(f: impl FnOnce(&mut Instance<J>) -> R) -> R {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let instance = slot.get_or_insert_with(|| Box::new(Instance::<J>::default()));
        f(instance
            .downcast_mut::<Instance<J>>()
            .expect("one job type per component"))
    })
}

pub fn init<J: Job>(config: Vec<(String, String)>) -> Result<(), String> {
    with_instance::<J, _>(|instance| instance.init(&config))
}

pub fn process<J: Job>(input: Batch, watermark: Option<i64>) -> Output {
    with_instance::<J, _>(|instance| instance.process_batch(&input, watermark))
}

pub fn snapshot<J: Job>() -> Vec<u8> {
    with_instance::<J, _>(|instance| instance.snapshot())
}

pub fn restore<J: Job>(state: Vec<u8>) -> Result<(), String> {
    let restored = Instance::<J>::restore(&state)?;
    with_instance::<J, _>(|instance| instance.replace_state(restored));
    Ok(())
}
