from .em_hook import EMHook, em_modules, em_state_digest, verify_em_state_across_ranks
from .resume import IterationSeedHook, ResumableSampler
from .trainer import Trainer, create_ddp_model
