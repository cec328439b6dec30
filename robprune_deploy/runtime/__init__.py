"""How this process uses the machine: the thread policy of torch, onnxruntime and OpenVINO."""

from robprune_deploy.runtime.threads import (
    ThreadChoice,
    apply_thread_policy,
    choose_threads,
    configure_session_options,
    current_thread_choice,
    ensure_thread_policy,
    openvino_config,
)

__all__ = [
    "ThreadChoice",
    "apply_thread_policy",
    "choose_threads",
    "configure_session_options",
    "current_thread_choice",
    "ensure_thread_policy",
    "openvino_config",
]
