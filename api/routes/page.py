"""The grid workers' page: one static file; it signs in with a token and talks to the API."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
PAGE = Path(__file__).parents[1] / "page" / "index.html"


@router.get("/page")
@router.get("/page/alerts/{alert_id}")
async def page(alert_id: int | None = None) -> FileResponse:
    # The same page for a deep link from a WeCom/DingTalk message; it opens on that alert.
    return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})
