//! The Python driver shipped inside this crate (`driver/aiopslab_driver.py`),
//! embedded at build time and written into each run's directory.
//!
//! Embedding it means a worker binary carries the exact driver it was
//! tested with; there is nothing to install besides AIOpsLab itself.

/// The file name the driver gets in the run directory.
pub const DRIVER_FILE_NAME: &str = "aiopslab_driver.py";

/// The driver's source.
pub const DRIVER_SOURCE: &str = include_str!("../driver/aiopslab_driver.py");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_follows_the_aiopslab_call_order() {
        // Past the module docs, which show the same calls.
        let code = &DRIVER_SOURCE[DRIVER_SOURCE.find("\nimport ").unwrap_or(0)..];
        let find = |needle: &str| code.find(needle).unwrap_or_else(|| panic!("the driver calls {needle}"));
        let construct = find("(results_dir=pathlib.Path(args.results_dir))");
        let register = find("orch.register_agent(");
        let init = find("orch.init_problem(args.problem_id)");
        let start = find("asyncio.run(orch.start_problem(max_steps=");
        assert!(construct < register && register < init && init < start);
        // Both orchestrators are AIOpsLab's own class or a subclass of it (never a fork).
        assert!(DRIVER_SOURCE.contains("(aio.Orchestrator)"));
        assert!(DRIVER_SOURCE.contains(&format!("PROTOCOL_VERSION = {}", crate::events::PROTOCOL_VERSION)));
    }
}
