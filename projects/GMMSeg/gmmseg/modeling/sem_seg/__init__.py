from .decoders import DECODER_REGISTRY, DeepLabV3PlusDecoder, FPNDecoder, build_decoder
from .head import PerPixelHead
from .meta_arch import PerPixelSegmentor
