"""The Alibi runtimes where Alibi is not installed (the main virtualenv): their names resolve,
bad settings are refused before any import, and a missing library fails the load with the
`pip install` line; an explainer block picks the runtime its type and folder need.
(They run for real in tests/integration/alibi, in a virtualenv that has Alibi.)"""

import pytest

from inferline.agent.settings import EXPLAINER, settings_from_spec
from inferline.protocol.errors import ModelLoadError
from inferline.runtimes.alibi_detect import AlibiDetectRuntime
from inferline.runtimes.alibi_explain import AlibiExplainRuntime
from inferline.runtimes.registry import ALIBI_EXPLAIN, installed_runtime_tags, runtime_class
from inferline.runtimes.settings import ModelSettings

ROUTER = "127.0.0.1:9000"


@pytest.mark.parametrize(
    ("implementation", "cls"),
    [
        ("mlserver_alibi_detect.AlibiDetectRuntime", AlibiDetectRuntime),
        ("alibi-detect", AlibiDetectRuntime),
        ("mlserver_alibi_explain.AlibiExplainRuntime", AlibiExplainRuntime),
        ("alibi-explain", AlibiExplainRuntime),
    ],
)
def test_mlserver_names_resolve_to_our_runtimes(implementation, cls):
    assert runtime_class(ModelSettings(name="m", implementation=implementation)) is cls


def test_no_alibi_tags_without_the_libraries():
    assert not {"alibi-detect", "alibi-explain"} & set(installed_runtime_tags())


async def test_a_detector_without_alibi_detect_names_the_extra(tmp_path):
    runtime = AlibiDetectRuntime(ModelSettings(name="drift", folder=tmp_path))
    with pytest.raises(ModelLoadError, match=r'pip install "inferline\[alibi-detect\]"'):
        await runtime.load()


async def test_a_misspelt_detector_setting_is_refused(tmp_path):
    settings = ModelSettings(name="drift", folder=tmp_path, extra={"bach_size": 3})
    with pytest.raises(ModelLoadError, match="did you mean 'batch_size'"):
        await AlibiDetectRuntime(settings).load()


def explainer(tmp_path, **extra) -> AlibiExplainRuntime:
    extra = {"infer_uri": f"http://{ROUTER}/v2/models/iris/infer", **extra}
    return AlibiExplainRuntime(ModelSettings(name="e", folder=tmp_path, extra=extra))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"explainer_type": "tree_shap"}, "white-box"),
        ({"explainer_type": "shapley"}, "must be one of anchor_tabular"),
        ({"explainer_type": "anchor_tabular", "infer_uri": "iris"}, "http"),
        ({"explainer_type": "anchor_tabular", "init_parameters": [1]}, "must be an object"),
        ({"explainer_type": "anchor_tabular"}, r'pip install "inferline\[alibi-explain\]"'),
    ],
)
async def test_explainer_settings_are_checked_at_load(tmp_path, extra, message):
    with pytest.raises(ModelLoadError, match=message):
        await explainer(tmp_path, **extra).load()


@pytest.mark.parametrize(
    ("kind", "files", "implementation"),
    [
        ("kernel_shap", ["background.npy"], EXPLAINER),
        ("feature_importance", ["background.npy"], EXPLAINER),
        # A KernelShap saved by alibi runs on alibi.
        ("kernel_shap", ["meta.dill", "explainer.dill"], ALIBI_EXPLAIN),
        ("anchor_tabular", ["meta.dill", "explainer.dill"], ALIBI_EXPLAIN),
    ],
)
def test_an_explainer_block_picks_the_runtime(tmp_path, kind, files, implementation):
    for name in files:
        (tmp_path / name).write_bytes(b"")  # only the names matter here
    spec = {"storageUri": str(tmp_path), "explainer": {"type": kind, "modelRef": "iris"}}
    settings = settings_from_spec("e", 1, spec, router=ROUTER)
    assert settings.implementation == implementation
    assert settings.extra["infer_uri"] == f"http://{ROUTER}/v2/models/iris/infer"
