"""Request bodies of the studio's JSON endpoints as pydantic models (what `/openapi.json` documents).

Edge Impulse's bodies (`/v1/api/...`) take every field the official clients (`edgeimpulse-api`)
send and ignore those the local studio has no use for (`extra="allow"`), as Edge Impulse does;
ranges and label names are checked by the handlers, which answer with Edge Impulse's messages.
The extension endpoints (`/api/...`) refuse unknown fields.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = StrictInt | StrictFloat


class _EI(BaseModel):
    """An Edge Impulse request body: unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    def given(self) -> dict[str, Any]:
        """The fields the client sent, under their wire names (extra fields included)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class _Ext(BaseModel):
    """A request body of an extension endpoint: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- shared
class Box(BaseModel):
    """A bounding box in pixels (Edge Impulse's `BoundingBox`)."""

    model_config = ConfigDict(extra="allow")
    label: StrictStr
    x: Number
    y: Number
    width: Number
    height: Number


# ---------------------------------------------------------------- /api (extensions)
class BoxesBody(_Ext):
    boxes: list[Box] = Field(description="the sample's boxes; an empty list saves 'no objects'")


class SamplePatch(_Ext):
    """`PATCH /api/samples/{id}`: metadata is merged (JSON merge patch), the rest replaced."""

    metadata: dict[str, Any] | None = None
    category: Literal["training", "testing"] | None = None
    label: StrictStr | None = None
    labeled: StrictBool | None = None


class LabelBody(_Ext):
    name: StrictStr = Field(description="a short lowercase label name such as 'apple'")


class RebalanceBody(_Ext):
    testFraction: Number = Field(0.2, description="share of the samples in testing, in [0, 1)")


class StageBody(_Ext):
    stage: Literal["candidate", "production", "retired"]


class DeviceKeyBody(_Ext):
    modelVersion: StrictInt | None = Field(None, description="the model version the key may download; null: ingest only")


# ---------------------------------------------------------------- /v1/api (Edge Impulse's Studio API)
class UpdateProjectRequest(_EI):
    name: StrictStr | None = None
    description: StrictStr | None = None
    metadata: dict[str, Any] | None = Field(None, description="project metadata; `labels` is the label set the labeling "
                                                              "tools offer")


class SampleBoundingBoxesRequest(_EI):
    boundingBoxes: list[Box]


class EditSampleLabelRequest(_EI):
    label: StrictStr | None = None


class MoveRawDataRequest(_EI):
    newCategory: Literal["training", "testing"]


class SetSampleMetadataRequest(_EI):
    metadata: dict[str, StrictStr] | None = None


class RenameSampleRequest(_EI):
    name: StrictStr


class _Block(_EI):
    id: StrictInt
    type: StrictStr
    name: StrictStr | None = None
    title: StrictStr | None = None


class ImpulseInputBlock(_Block):
    imageWidth: StrictInt | None = None
    imageHeight: StrictInt | None = None
    resizeMode: StrictStr | None = None


class ImpulseDspBlock(_Block):
    axes: list[StrictStr] | None = None
    implementationVersion: StrictInt | None = None


class ImpulseLearnBlock(_Block):
    dsp: list[StrictInt] | None = None


class CreateImpulseRequest(_EI):
    name: StrictStr | None = None
    inputBlocks: list[ImpulseInputBlock]
    dspBlocks: list[ImpulseDspBlock]
    learnBlocks: list[ImpulseLearnBlock]


class DSPConfigRequest(_EI):
    config: dict[str, Any] | None = Field(description="the image block's parameters: `channels` (RGB or Grayscale)")


class KerasVisualLayer(_EI):
    type: StrictStr


class SetKerasParameterRequest(_EI):
    trainingCycles: StrictInt | None = Field(None, ge=1, le=1000)
    learningRate: Number | None = Field(None, gt=0, lt=1)
    batchSize: Number | None = Field(None, ge=1, le=512)
    trainTestSplit: Number | None = Field(None, gt=0, lt=1, description="the validation set size")
    visualLayers: list[KerasVisualLayer] | None = None
    customParameters: dict[str, StrictStr | Number | None] | None = Field(
        None, description="arch (a helpers.train architecture), seed, time_budget_s (seconds; '' for none)")


class SavePretrainedModelRequest(_EI):
    """`LearnApi.save_pretrained_model_parameters`: what the uploaded model's input and output are."""

    input: dict[str, Any] = Field(description="Edge Impulse's input description, e.g. {inputType: image, inputScaling: 0..1}")
    model: dict[str, Any] = Field(description="Edge Impulse's model description, e.g. {modelType: object-detection, labels, "
                                              "lastLayer, minimumConfidence}")


class BuildOnDeviceModelRequest(_EI):
    """`JobsApi.build_on_device_model_job`: the engine and model type of the deployment to build."""

    engine: StrictStr
    modelType: StrictStr | None = None
