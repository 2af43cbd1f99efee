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
        let register = DRIVER_SOURCE.find("orch.register_agent(").unwrap();
        let init = DRIVER_SOURCE.find("orch.init_problem(").unwrap();
        let start = DRIVER_SOURCE.find("asyncio.run(orch.start_problem(max_steps=").unwrap();
        assert!(register < init && init < start);
        assert!(DRIVER_SOURCE.contains("Orchestrator(results_dir=pathlib.Path("));
        assert!(DRIVER_SOURCE.contains(&format!("PROTOCOL_VERSION = {}", crate::events::PROTOCOL_VERSION)));
    }
}
