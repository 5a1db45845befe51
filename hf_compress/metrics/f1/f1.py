"""Macro F1 (binary F1 for two classes), as an `evaluate` metric module shipped with hf_compress."""

import datasets
import evaluate


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 of the positive class for binary tasks, macro-averaged F1 otherwise.",
            citation="",
            inputs_description="predictions, references: integer class ids",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        labels = sorted(set(references) | set(predictions))
        positive = [1] if set(labels) <= {0, 1} else labels
        scores = []
        for label in positive:
            tp = sum(1 for p, r in zip(predictions, references) if p == label and r == label)
            fp = sum(1 for p, r in zip(predictions, references) if p == label and r != label)
            fn = sum(1 for p, r in zip(predictions, references) if p != label and r == label)
            scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return {"f1": sum(scores) / len(scores)}
