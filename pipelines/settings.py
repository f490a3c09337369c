"""Settings of the continual-unlearning pipeline: which model, which retain data, which recipe, search and gate.

``PipelineSettings`` is a frozen dataclass built from keyword arguments, a dict or a YAML file
(``configs/pipeline.yaml`` documents every key). Unknown keys are errors that name the key and the known ones.
The work dir (``$ASU_WORK_DIR`` or ``./asu-work``) holds the ledger, the MLflow store, rounds and reports.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

from asu.config import ASUConfig
from asu.device import DeviceName, DTypeName, Placement
from asu.errors import UsageError
from asu.hashing import sha256_text
from asu.recipes import get_recipe
from asu.robustness import RobustnessConfig
from asu.strict import check_keys, read_yaml_mapping
from pipelines.evaluate import SUITES, Suite
from pipelines.temperature_search.config import SearchConfig

PromotionMode = Literal["auto", "manual"]
#: Whose language judges the fluency of forget answers: the model each round starts from, or a named model/folder.
ChampionJudge = Literal["champion"]
#: Whose smoothed attention teaches each round: the model the round starts from (the previous round's) or the
#: original base model of the chain.
TeacherSource = Literal["previous", "original"]
#: What a round that failed the gate tries next (``gate_retries``): see ``PipelineSettings``.
GateRetry = Literal["gentler_strength", "runner_up"]
#: Privleak needs a reference model that never saw the forget data (a retain model); "none": not measured.
NoReference = Literal["none"]


@dataclass(frozen=True)
class PipelineSettings:
    """Everything a pipeline run reads besides the requests themselves.

    base_model: ``embedded:<variant>`` (built on first use), a named model (``smollm2-135m``, prepared on
        first use) or a local model folder; registered as version 1
        and made champion when the registry has no champion yet.
    retain_file: QA items the model must keep (JSON/JSONL {question, answer}); the round's retain loss, the
        search's retain validation sample and the report's retain figures all come from it (disjoint parts).
    holdout_file: QA items the model never saw (MIA non-members); without it the MIA AUC is not measured and the
        gate's ``mia_auc`` check must be disabled.
    recipe / overrides: the ASU round (``asu.recipes``), tau is chosen by the search; resolved once into
        ``round`` (an ``ASUConfig``).
    search: a ``SearchConfig`` (a dict of its fields is converted once, here).
    gate_file: gate thresholds YAML (default ``configs/gate.yaml``).
    promotion: ``auto`` promotes a candidate that passes the gate to ``champion``; ``manual`` leaves it
        ``candidate`` for ``asu promote``.
    benchmarks: suites evaluated on every candidate (``tofu``, ``asu-paper``, ``muse``, ``wmdp``), first
        ``benchmark_limit`` items each. report_retain_items: retain items scored for utility in the report.
    fluency_model: ``champion`` judges fluency with the model each round starts from; a model name or folder
        judges with that model instead (for a base model fine-tuned to memorise its forget answers, such as a
        TOFU target, name the pretrained model it came from: the target finds any other answer unlikely).
    robustness: the attacks (``asu.robustness``: ``relearn``, ``quantize_8bit``, ``quantize_4bit``, ``prefix``,
        ``best_of_n``) run on every candidate's report forget items, and their settings (a dict of
        ``RobustnessConfig`` fields; default: no attack). A gate that lists an attack under ``attacks_required`` needs
        it measured here. ``paraphrase`` is not available: requests carry no paraphrased questions.
    privleak_reference: ``none``, or a model name / folder that never saw the forget data (a retain model):
        the report then gives privleak, ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref) x 100, of the forget items
        against the holdout (MUSE's privleak; ~0 ideal, negative: still recognisably trained on them). Needs
        ``holdout_file``.
    teacher_source: ``previous``: each round's teacher is the model it starts from (the champion, i.e. the
        previous round's model; the paper's single-round setting); ``original``: every round is taught by the
        chain's base model (``base_model``), so later rounds do not distil earlier rounds' drift.
    gate_retries: when a round fails the gate, train the search's next-best safe and effective setting
        (``SearchOutcome.runner_ups``) and gate it, at most this many times; every attempt is registered as a
        candidate with its gate verdict and the evidence report lists the failed ones. 0: the first verdict stands.
    gate_retry: what a retry trains. ``gentler_strength``: a round that failed only on damage (``fluency``,
        ``utility_drop``) is trained again at the same tau and lambda one level down the search's strength ladder
        (``search.lr_multipliers``), a setting the gate alone judges; any other failure, or no gentler level, takes
        the runner-up. ``runner_up``: always the runner-up.
    """

    base_model: str = "embedded:default"
    retain_file: str = ""
    holdout_file: str | None = None
    recipe: str = "embedded"
    overrides: dict[str, Any] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    gate_file: str | None = None
    promotion: PromotionMode = "auto"
    model_name: str = "asu-unlearned"
    benchmarks: tuple[Suite, ...] = ()
    benchmark_limit: int = 20
    report_retain_items: int = 40
    max_new_tokens: int = 200
    fluency_model: ChampionJudge | str = "champion"
    privleak_reference: NoReference | str = "none"
    teacher_source: TeacherSource = "previous"
    gate_retries: int = 1
    gate_retry: GateRetry = "gentler_strength"
    robustness: RobustnessConfig = field(default_factory=lambda: RobustnessConfig(attacks=()))
    device: DeviceName = "auto"
    dtype: DTypeName = "auto"

    def __post_init__(self) -> None:
        if not self.retain_file:
            raise UsageError("retain_file is required: the QA items (JSON/JSONL) the model must keep")
        if self.promotion not in get_args(PromotionMode):
            raise UsageError(f"promotion={self.promotion!r}: use 'auto' or 'manual'")
        object.__setattr__(self, "benchmarks", tuple(self.benchmarks))
        unknown = [b for b in self.benchmarks if b not in SUITES]
        if unknown:
            raise UsageError(f"benchmarks {unknown} unknown; choose from {', '.join(SUITES)}")
        if self.teacher_source not in get_args(TeacherSource):
            raise UsageError(f"teacher_source={self.teacher_source!r}: use 'previous' or 'original'")
        if isinstance(self.gate_retries, bool) or not isinstance(self.gate_retries, int) or self.gate_retries < 0:
            raise UsageError(f"gate_retries={self.gate_retries!r} must be an integer >= 0 (how many runner-up "
                             "settings a round that fails the gate may try; 0 = none)")
        if self.gate_retry not in get_args(GateRetry):
            raise UsageError(f"gate_retry={self.gate_retry!r}: use 'gentler_strength' or 'runner_up'")
        if not isinstance(self.fluency_model, str) or not self.fluency_model.strip():
            raise UsageError("fluency_model must be 'champion' or a model name / folder (asu model list)")
        if not isinstance(self.privleak_reference, str) or not self.privleak_reference.strip():
            raise UsageError("privleak_reference must be 'none' or a model name / folder that never saw the forget "
                             "data (a retain model)")
        if self.privleak_reference != "none" and not self.holdout_file:
            raise UsageError(f"privleak_reference={self.privleak_reference!r} needs holdout_file (the items or "
                             "passages the models never saw, against which membership is measured); set it, or "
                             "set privleak_reference: none")
        if min(self.benchmark_limit, self.report_retain_items, self.max_new_tokens) < 1:
            raise UsageError("benchmark_limit, report_retain_items and max_new_tokens must be >= 1")
        if isinstance(self.search, dict):
            object.__setattr__(self, "search", SearchConfig.from_dict(self.search))
        elif not isinstance(self.search, SearchConfig):
            raise UsageError(f"search must be a mapping of SearchConfig fields, got {type(self.search).__name__}")
        if isinstance(self.robustness, dict):
            object.__setattr__(self, "robustness", RobustnessConfig.from_dict(
                {"attacks": [], **self.robustness}))
        elif not isinstance(self.robustness, RobustnessConfig):
            raise UsageError(f"robustness must be a mapping of RobustnessConfig fields (e.g. {{attacks: [relearn]}}), "
                             f"got {type(self.robustness).__name__}")
        if "paraphrase" in self.robustness.attacks:
            raise UsageError("robustness attack 'paraphrase' needs paraphrased questions, which forget requests do "
                             "not carry; drop it from robustness.attacks (bench/robustness.py runs it on scenarios)")
        self.round  # noqa: B018 - fail now on a bad recipe or override, not after the search
        self.placement.torch_dtype()  # and on a bad device or dtype, or a device this machine lacks

    @cached_property
    def placement(self) -> Placement:
        """Where the pipeline loads the models it scores (search, judge, measurement, benchmarks)."""
        return Placement(self.device, self.dtype)

    @cached_property
    def round(self) -> ASUConfig:
        """The round's configuration: the recipe with ``overrides`` applied (built once per settings object)."""
        return ASUConfig.from_dict({**get_recipe(self.recipe).to_dict(), **self.overrides})

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**fields, "overrides": dict(self.overrides), "search": self.search.to_dict(),
                "robustness": self.robustness.to_dict(),
                "benchmarks": list(self.benchmarks)}

    def digest(self) -> str:
        return sha256_text(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "pipeline settings",
                  lines: dict[str, int] | None = None) -> PipelineSettings:
        """Strict: an unknown key names ``source:line`` and the closest known key (``asu.strict``)."""
        check_keys(data, cls, what="pipeline settings", source=source, lines=lines)
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineSettings:
        data, lines = read_yaml_mapping(path, "pipeline settings file")
        return cls.from_dict(data, str(path), lines)


__all__ = ["PipelineSettings", "PromotionMode", "TeacherSource"]
