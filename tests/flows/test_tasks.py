"""The flows name the registry's tasks the way the packages that train them do."""

from __future__ import annotations


def test_retrain_task_names_are_the_trainers_names() -> None:
    import assist.actions
    import insight.training as training
    from flows import retrain
    from flows.training import ALL_TASKS

    assert (retrain.TASK_INTENT, retrain.TASK_ROUTER, retrain.TASK_MISROUTE, retrain.TASK_NEXT_ACTIVITY,
            retrain.TASK_REMAINING_TIME, retrain.TASK_MEMORY) == (
        training.TASK_INTENT, training.TASK_ROUTER, training.TASK_MISROUTE, training.TASK_NEXT_ACTIVITY,
        training.TASK_REMAINING_TIME, training.TASK_MEMORY)
    assert retrain.TASK_STEP_OUTCOMES == assist.actions.TASK_STEP_OUTCOMES
    assert set(retrain.RETRAIN_TASKS) == set(ALL_TASKS)
    assert set(retrain.GATED_TASKS) < set(retrain.RETRAIN_TASKS)


def test_importing_the_retrain_flow_does_not_load_the_training_stack() -> None:
    import subprocess
    import sys

    code = ("import sys, flows.retrain; heavy = [m for m in ('insight.training', 'lightgbm', 'assist.actions') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
