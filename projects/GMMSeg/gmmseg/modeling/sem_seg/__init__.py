from .aux_head import AuxiliaryFCNHead, build_auxiliary_head
from .decoders import DECODER_REGISTRY, DeepLabV3PlusDecoder, FPNDecoder, build_decoder
from .fcn import FCNDecoder
from .head import PerPixelHead
from .meta_arch import PerPixelSegmentor
from .ocr import OCRDecoder
from .segformer_mlp import SegFormerMLPDecoder
from .upernet import UPerNetDecoder
