"""Mean squared error for regression heads, as an `evaluate` metric module shipped with hf_compress."""

import datasets
import evaluate


class MSE(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean squared error.",
            citation="",
            inputs_description="predictions, references: floats",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"mse": sum((p - r) ** 2 for p, r in zip(predictions, references)) / max(len(references), 1)}
