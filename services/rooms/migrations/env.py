from services.common.migrations_env import run
from services.rooms.models import Base

run(Base.metadata)
