from .em_hook import EMHook, em_modules
from .trainer import Trainer, create_ddp_model
