"""Local transformers models as members: `HFMember` and its jobs, one module each (loading, prompts,
generation, scoring, stepping), over a shared `LoadedModel`."""

from ensemble_core.members.hf.loading import default_device, resolve_dtype
from ensemble_core.members.hf.member import HFMember
from ensemble_core.members.hf.stepping import HFStepSession

__all__ = ["HFMember", "HFStepSession", "default_device", "resolve_dtype"]
