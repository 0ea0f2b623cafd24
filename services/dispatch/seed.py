"""A small seeded organisation so a fresh database routes tickets out of the box."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.models import Department

SUPERVISED_POOL = "city-centre-pool"

SEED: tuple[tuple[str, str, str, str, str, list[str], list[str]], ...] = (
    # code, name_zh, name_en, tier, area, responsibilities, flags
    (SUPERVISED_POOL, "市12345热线督办池", "City 12345 supervised pool", "city", "330600", [], ["pool"]),
    ("city-housing", "市住房和城乡建设局", "City Housing and Construction Bureau", "city", "330600", ["01", "08"], []),
    ("city-ecology", "市生态环境局", "City Ecology and Environment Bureau", "city", "330600", ["02"], []),
    ("city-transport", "市交通运输局", "City Transport Bureau", "city", "330600", ["03"], []),
    ("city-market", "市市场监督管理局", "City Market Regulation Bureau", "city", "330600", ["04", "14"], []),
    ("city-hrss", "市人力资源和社会保障局", "City Human Resources and Social Security Bureau", "city", "330600", ["05"], []),
    ("city-justice", "市司法局", "City Justice Bureau", "city", "330600", ["13"], ["judicial"]),
    ("town-fengqiao", "枫桥镇人民政府", "Fengqiao Town Government", "town", "330681101", ["0901", "0905", "1301", "1304"], []),
)


async def seed_organisation(session: AsyncSession) -> int:
    """Insert the seed departments into an empty table; return how many were added."""
    count = (await session.execute(select(func.count()).select_from(Department))).scalar_one()
    if count:
        return 0
    for code, zh, en, tier, area, resp, flags in SEED:
        session.add(
            Department(code=code, name_zh=zh, name_en=en, tier=tier, area_code=area,
                       responsibilities=resp, flags=flags)
        )
    return len(SEED)
