"""The model zoo: `create_model(name, num_classes=..., in_channels=..., conv=...)`.

Families register themselves by import below (explicit, no star imports).
"""

from nettle.models import attention_ocr as _attention_ocr
from nettle.models import bayes_lenet as _bayes_lenet
from nettle.models import crnn as _crnn
from nettle.models import darts as _darts
from nettle.models import resnet as _resnet
from nettle.models import simple_cnn as _simple_cnn
from nettle.models import vgg as _vgg
from nettle.models import wrn as _wrn
from nettle.models import yolo as _yolo
from nettle.models.factory import MODELS, create_model, list_models

__all__ = ["MODELS", "create_model", "list_models"]
del _attention_ocr, _bayes_lenet, _crnn, _darts, _resnet, _simple_cnn, _vgg, _wrn, _yolo
