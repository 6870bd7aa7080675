import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        self.session = ort.InferenceSession(self.settings.parameters.uri, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(request.inputs[0]).astype(np.float32)
        logits, probs = self.session.run(None, {"image": x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("logits", logits), NumpyCodec.encode_output("probabilities", probs)],
        )
