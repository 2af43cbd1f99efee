"""FAKE-only: the per-task-type evaluations the real problems share (same
results keys and rules as the real misconfig/target-port problems)."""

from aiopslab.orchestrator.evaluators.quantitative import is_exact_match, is_exact_match_lower, is_subset


def detection(task, soln, expected):
    if isinstance(soln, str):
        correct = soln.strip().lower() == expected.lower()
        task.add_result("Detection Accuracy", "Correct" if correct else "Incorrect")
    else:
        task.add_result("Detection Accuracy", "Invalid Format")


def localization(task, soln, faulty_service):
    """Returns after the common evaluation has run (the caller's super().eval)."""
    if soln is None:
        task.add_result("Localization Accuracy", 0.0)
        return {"success": False, "is_subset": False}
    exact = is_exact_match(soln, faulty_service)
    covers = is_subset([faulty_service], soln)
    if exact:
        accuracy = 100.0
    elif covers:
        accuracy = 100.0 / len(soln)
    else:
        accuracy = 0.0
    task.add_result("Localization Accuracy", accuracy)
    return {"success": exact or (covers and len(soln) == 1), "is_subset": covers}


def analysis(soln, system_level, fault_type):
    if not isinstance(soln, dict):
        return {"system_level_correct": False, "fault_type_correct": False, "success": False}
    level_ok = is_exact_match_lower(soln.get("system_level", ""), system_level)
    type_ok = is_exact_match_lower(soln.get("fault_type", ""), fault_type)
    return {"system_level_correct": level_ok, "fault_type_correct": type_ok, "success": level_ok and type_ok}
