"""The recurrent student family (Tang et al. 2019), registered with the Auto classes on import."""

from transformers import AutoConfig, AutoModelForSequenceClassification

from .config import MODEL_TYPE, RNNStudentConfig
from .from_teacher import rnn_student_from_teacher
from .modeling import RNNStudentForSequenceClassification

AutoConfig.register(MODEL_TYPE, RNNStudentConfig, exist_ok=True)
AutoModelForSequenceClassification.register(RNNStudentConfig, RNNStudentForSequenceClassification, exist_ok=True)

__all__ = ["RNNStudentConfig", "RNNStudentForSequenceClassification", "rnn_student_from_teacher"]
