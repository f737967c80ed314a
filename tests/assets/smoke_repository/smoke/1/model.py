"""Smoke-test model: Y = 2 * X, TEXT_OUT = TEXT.upper(), NUMPY_MAJOR = the stub's numpy major."""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            upper = np.array([[t.decode("utf-8").upper().encode("utf-8") for t in row] for row in text], dtype=object)
            major = np.full((x.shape[0], 1), int(np.__version__.split(".")[0]), dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("Y", (2 * x).astype(np.float32)),
                pb_utils.Tensor("TEXT_OUT", upper),
                pb_utils.Tensor("NUMPY_MAJOR", major),
            ]))
        return responses
