from services.common.migrations_env import run
from services.token.models import Base

run(Base.metadata)
