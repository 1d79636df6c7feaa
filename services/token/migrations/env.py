from sqlalchemy import MetaData

from services.common.migrations_env import run

run(MetaData())
