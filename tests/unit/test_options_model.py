"""One options model: every option list of the runtime and the adapters is derived from it.

``ModelOptions`` (runtime/local_llm_runtime/options.py) declares each Ollama-named
option once: type, bounds, documentation and destination (load / sampling /
request). These tests check that the runtime's table, ``split_options`` and the
LangChain and LlamaIndex fields all follow it, and that an option added to the
model (here: in a subclass, through the same derivation functions) becomes
available, validated, documented and routed in both frameworks with no other edit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from pydantic import BaseModel, FiniteFloat, ValidationError

from local_llm_integrations import ChatLocal
from local_llm_integrations._options import (
    CALL_OPTIONS,
    EMBEDDING_DESTINATIONS,
    OPTION_FIELDS,
    adapter_option_fields,
    option_fields_mixin,
)
from local_llm_integrations.langchain import LocalEmbeddings
from local_llm_integrations.langchain import LocalLLM as LangChainLLM
from local_llm_integrations.llama_index import LocalEmbedding
from local_llm_integrations.llama_index import LocalLLM as IndexLLM
from local_llm_runtime import InvalidOptionError, UnknownOptionError
from local_llm_runtime.llama.engine import split_options
from local_llm_runtime.llama.pool import LoadOptions
from local_llm_runtime.llama.sampling import SamplingOptions
from local_llm_runtime.options import (
    OPTIONS,
    ModelOptions,
    OptionSpec,
    field_destination,
    option_field,
    option_table,
    parse_params,
    split_by_destination,
    validate_options,
)

LLM_ADAPTERS: list[type[BaseModel]] = [ChatLocal, LangChainLLM, IndexLLM]
EMBEDDING_ADAPTERS: list[type[BaseModel]] = [LocalEmbeddings, LocalEmbedding]
NAMES = list(ModelOptions.model_fields)


def _valid(spec: OptionSpec) -> Any:
    """A value inside ``spec``'s range (not its default)."""
    if spec.repeated:
        return ["###"]
    if spec.duration:
        return "7m"
    low = 1 if spec.minimum is None else spec.minimum + 1
    value = low if spec.maximum is None else min(low, spec.maximum)
    return spec.kind(value)


def _out_of_range(spec: OptionSpec) -> Any:
    """A value just outside ``spec``'s range, or NaN for an unbounded float."""
    if spec.maximum is not None:
        return spec.kind(spec.maximum + 1)
    if spec.minimum is not None:
        return spec.kind(spec.minimum - 1)
    return math.nan


_COMPANIONS: dict[str, dict[str, Any]] = {"top_logprobs": {"logprobs": True}}
"""Options another option needs beside it (``top_logprobs`` above 0 needs ``logprobs``)."""


def _adapters_for(name: str) -> list[type[BaseModel]]:
    relevant = field_destination(ModelOptions.model_fields[name]) in EMBEDDING_DESTINATIONS
    return LLM_ADAPTERS + (EMBEDDING_ADAPTERS if relevant else [])


# ---- (a) the model is the table; every adapter has the same fields --------------------


def test_the_runtime_table_is_the_model() -> None:
    assert list(OPTIONS) == NAMES
    assert option_table(ModelOptions) is OPTIONS
    for name, spec in OPTIONS.items():
        info = ModelOptions.model_fields[name]
        assert spec.destination == field_destination(info)
        assert spec.description == info.description
        assert spec.help == info.title
    assert set(OPTION_FIELDS) == {n for n, s in OPTIONS.items() if s.destination != "request"}
    assert {*OPTION_FIELDS, "max_tokens"} == CALL_OPTIONS


@pytest.mark.parametrize("name", NAMES)
def test_every_option_is_bounded_and_documented(name: str) -> None:
    spec = OPTIONS[name]
    info = ModelOptions.model_fields[name]
    assert info.default is None  # unset: the model's parameter or the runtime default
    assert len(info.description or "") > 40 and info.title
    assert "default" in (info.description or "").lower()  # Ollama's meaning and default
    if spec.kind is int:
        assert spec.minimum is not None and spec.maximum is not None  # int32/uint32 for C
    if spec.kind in (int, float) and not spec.repeated:
        with pytest.raises(InvalidOptionError, match=name):
            validate_options({name: _out_of_range(spec)})
        with pytest.raises(ValidationError, match=name):
            ModelOptions.model_validate({name: _out_of_range(spec)})


@pytest.mark.parametrize("name", NAMES)
def test_every_option_is_the_same_field_in_every_adapter(name: str) -> None:
    spec = OPTIONS[name]
    model_info = ModelOptions.model_fields[name]
    for cls in _adapters_for(name):
        info = cls.model_fields[name]
        assert info.description == model_info.description, cls
        assert info.title == model_info.title, cls
        assert info.metadata == model_info.metadata, cls  # the same ge/le
        assert info.annotation == model_info.annotation, cls  # finite floats included
        assert info.default is None
        assert field_destination(info) == spec.destination
        value = _valid(spec)
        instance = cls(model="m", **{**_COMPANIONS.get(name, {}), name: value})
        assert getattr(instance, name) == value
        with pytest.raises((ValidationError, InvalidOptionError), match=name):
            cls(model="m", **{name: _out_of_range(spec) if not spec.repeated else [""]})


def test_embedding_adapters_have_no_sampling_options() -> None:
    for cls in EMBEDDING_ADAPTERS:
        for name, spec in OPTIONS.items():
            assert (name in cls.model_fields) == (spec.destination != "sampling"), (cls, name)


def test_adapter_aliases_still_work() -> None:
    assert ChatLocal(model="m", max_tokens=7).num_predict == 7
    assert LangChainLLM(model="m", max_tokens=7).engine_options() == {"num_predict": 7}
    index = IndexLLM(model="m", max_tokens=7, context_window=99)
    assert (index.num_predict, index.num_ctx) == (7, 99)


@pytest.mark.parametrize("name", NAMES)
def test_every_option_goes_where_its_metadata_says(name: str) -> None:
    spec = OPTIONS[name]
    value = _valid(spec)
    companions = _COMPANIONS.get(name, {})
    load, sampling, keep_alive = split_options({**companions, name: value})
    converted = validate_options({**companions, name: value})[name]
    if spec.destination == "load":
        assert getattr(load, name) == converted
        assert sampling == SamplingOptions()
    elif spec.destination == "sampling":
        expected = tuple(converted) if spec.repeated else converted
        assert getattr(sampling, name) == expected
        assert load == LoadOptions()
    else:
        assert (load, sampling, keep_alive) == (LoadOptions(), SamplingOptions(), converted)
    # ``create --param`` / ``/set parameter``: Ollama's text form parses to the same value
    text = value[0] if spec.repeated else str(value)
    pairs = [f"{k}={v}" for k, v in companions.items()]
    assert parse_params([*pairs, f"{name}={text}"]) == {**companions, name: converted}


def test_the_backend_options_match_the_model() -> None:
    sampling = {f.name: f.default for f in dataclasses.fields(SamplingOptions)}
    assert set(sampling) == {n for n, s in OPTIONS.items() if s.destination == "sampling"}
    load = {f.name for f in dataclasses.fields(LoadOptions)}
    assert {n for n, s in OPTIONS.items() if s.destination == "load"} <= load
    for name, default in sampling.items():  # the documented default is the runtime's
        if isinstance(default, int | float) and not isinstance(default, bool):
            assert str(default) in (OPTIONS[name].description), name


# ---- (b) adding an option to the one model is the only edit --------------------------


class ExtendedOptions(ModelOptions):
    """What a newcomer's edit looks like: one field each (here in a subclass)."""

    top_n_sigma: FiniteFloat | None = option_field(
        "sampling",
        "top-n-sigma threshold",
        "Keep tokens within top_n_sigma standard deviations of the best logit. Default: off.",
        ge=0.0,
        le=10.0,
    )
    num_slot: int | None = option_field(
        "load", "parallel slots", "Requests decoded together. Default: 4.", ge=1, le=64
    )


NEW = ("top_n_sigma", "num_slot")


def test_a_new_option_is_validated_and_routed_by_the_runtime() -> None:
    table = option_table(ExtendedOptions)
    assert (table["top_n_sigma"].minimum, table["top_n_sigma"].maximum) == (0.0, 10.0)
    assert validate_options({"top_n_sigma": 2, "num_slot": 3}, model=ExtendedOptions) == {
        "top_n_sigma": 2.0,
        "num_slot": 3,
    }
    with pytest.raises(InvalidOptionError, match=r"top_n_sigma.*between 0\.0 and 10\.0"):
        validate_options({"top_n_sigma": 11}, model=ExtendedOptions)
    with pytest.raises(InvalidOptionError, match="finite"):
        validate_options({"top_n_sigma": math.inf}, model=ExtendedOptions)
    with pytest.raises(UnknownOptionError, match=r"(?i)did you mean 'top_n_sigma'"):
        validate_options({"top_n_sigmaa": 1}, model=ExtendedOptions)
    with pytest.raises(UnknownOptionError):  # the base model does not have it
        validate_options({"top_n_sigma": 1})
    assert parse_params(["num_slot=8"], model=ExtendedOptions) == {"num_slot": 8}
    parts = split_by_destination(
        {"top_n_sigma": 1.0, "num_slot": 2, "temperature": 0.0}, ExtendedOptions
    )
    assert parts == {
        "sampling": {"top_n_sigma": 1.0, "temperature": 0.0},
        "load": {"num_slot": 2},
        "request": {},
    }


def test_a_new_option_is_a_field_of_both_frameworks() -> None:
    chat_fields = option_fields_mixin(ExtendedOptions, aliases={"num_predict": "max_tokens"})

    class ExtChat(chat_fields, ChatLocal):  # type: ignore[misc,valid-type]
        pass

    class ExtIndex(option_fields_mixin(ExtendedOptions), IndexLLM):  # type: ignore[misc]
        pass

    class ExtEmbedding(  # type: ignore[misc]
        option_fields_mixin(ExtendedOptions, destinations=EMBEDDING_DESTINATIONS),
        LocalEmbedding,
    ):
        pass

    new_info = ExtendedOptions.model_fields["top_n_sigma"]
    for cls in (ExtChat, ExtIndex):
        info = cls.model_fields["top_n_sigma"]
        assert (info.description, info.metadata) == (new_info.description, new_info.metadata)
        # The runtime's own error, before pydantic (as a per-call option would get).
        with pytest.raises(InvalidOptionError, match="top_n_sigma"):
            cls(model="m", top_n_sigma=11)
        with pytest.raises(InvalidOptionError, match="top_n_sigma"):
            cls(model="m", top_n_sigma=math.nan)
        with pytest.raises(ValidationError, match="top_n_sigma"):  # model_validate: pydantic's
            cls.model_validate({"model": "m", "top_n_sigma": 11})
        with pytest.raises(UnknownOptionError, match=r"(?i)did you mean 'top_n_sigma'"):
            cls(model="m", top_n_sigmaa=1)

    chat = ExtChat(model="m", top_n_sigma=2, num_slot=3, max_tokens=5)
    assert chat.engine_options() == {"top_n_sigma": 2.0, "num_slot": 3, "num_predict": 5}
    assert chat.engine_options({"top_n_sigma": 1.5})["top_n_sigma"] == 1.5

    index = ExtIndex(model="m", top_n_sigma=2, num_slot=3)
    request = index._request({})
    assert request.options == {"top_n_sigma": 2.0, "num_slot": 3}
    assert index._request({"top_n_sigma": 0.5}).options["top_n_sigma"] == 0.5  # per call

    assert "top_n_sigma" not in ExtEmbedding.model_fields  # a sampling option
    assert ExtEmbedding(model="m", num_slot=2).option_values(("load",)) == {"num_slot": 2}
    with pytest.raises(InvalidOptionError, match="num_slot"):
        ExtEmbedding(model="m", num_slot=65)


def test_the_field_set_is_derived_by_one_function() -> None:
    fields = adapter_option_fields(ExtendedOptions)
    assert list(fields) == list(ExtendedOptions.model_fields)
    assert set(adapter_option_fields(ExtendedOptions, destinations=("load", "request"))) == {
        n for n, s in option_table(ExtendedOptions).items() if s.destination != "sampling"
    }
    assert all(n in fields for n in NEW)
