"""Run configurations: one small dataclass per concern (`*Config`), read from YAML or JSON and checked field by field.

    sections    the shared sections: DataConfig, ModelConfig, TrainConfig, SolverConfig, GenerateConfig
    stages      one config per stage: TeacherConfig, ReflowConfig, GuidesConfig, DistillConfig, SampleConfig
    comparison  CompareConfig and its MethodConfig, EvaluateConfig, GuideMapConfig
    loader      files and --set overrides into validated configs (load_stage), and back (to_yaml)

Nothing here reads data sets or run directories: the stages check names and paths when they start.
Every user mistake raises bezier_distill.errors.ConfigError with one line naming the field.
"""
from ..errors import ConfigError
from .comparison import CompareConfig, EvaluateConfig, GuideMapConfig, MethodConfig, default_methods
from .loader import STAGES, apply_override, from_dict, load_stage, read_file, to_yaml, validate
from .sections import DataConfig, GenerateConfig, ModelConfig, SolverConfig, TrainConfig
from .stages import RESUMABLE_CHANGES, DistillConfig, GuidesConfig, ReflowConfig, SampleConfig, TeacherConfig

__all__ = ["ConfigError", "CompareConfig", "EvaluateConfig", "GuideMapConfig", "MethodConfig", "default_methods",
           "STAGES", "apply_override", "from_dict", "load_stage", "read_file", "to_yaml", "validate", "DataConfig",
           "GenerateConfig", "ModelConfig", "SolverConfig", "TrainConfig", "RESUMABLE_CHANGES", "DistillConfig",
           "GuidesConfig", "ReflowConfig", "SampleConfig", "TeacherConfig"]
