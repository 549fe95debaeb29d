"""Order reviews (评价): one per paid order, by its buyer, earning points and growth.

The unique `order_id` on `reviews` is the guard, so a double submit reviews once; the
points are keyed by the review id and so are awarded once with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from core import activity
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.models import PAID_STATUSES, Order, PointLot, Review
from core.points import award_points_on
from core.sql import insert_ignoring_conflict
from core.uow import Database, run_on

RATING_MIN, RATING_MAX = 1, 5


@dataclass(frozen=True, slots=True)
class ReviewView:
    id: int
    order_id: int
    member_id: int
    rating: int
    text: str
    #: Points the review earned.
    points: int
    created_at: datetime


class Reviews:
    def __init__(
        self,
        db: Database,
        ladder: Ladder,
        clock: Clock,
        on_activity: Callable[[int], Awaitable[object]] | None = None,
    ) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._on_activity = on_activity

    async def review(
        self, member_id: int, order_id: int, rating: int, text: str = ""
    ) -> ReviewView:
        """Review an own paid order once.

        Someone else's order, an unpaid or a refunded one all answer ORDER_NOT_FOUND, so
        the reply never confirms that another member's order exists.
        """
        if not RATING_MIN <= rating <= RATING_MAX:
            raise ShopError(ErrorCode.INVALID_RATING, rating=rating, min=RATING_MIN, max=RATING_MAX)
        now = self._clock.now()
        body = text.strip()
        points = self._ladder.points.review_points
        async with self._db.transaction() as session:
            order = await session.scalar(
                select(Order.id).where(
                    Order.id == order_id,
                    Order.member_id == member_id,
                    Order.status.in_(PAID_STATUSES),
                )
            )
            if order is None:
                raise ShopError(ErrorCode.ORDER_NOT_FOUND, order=order_id)
            review_id = await session.scalar(
                insert_ignoring_conflict(session, Review),
                {
                    "order_id": order_id,
                    "member_id": member_id,
                    "rating": rating,
                    "text": body,
                    "created_at": now,
                },
            )
            if review_id is None:
                raise ShopError(ErrorCode.ALREADY_REVIEWED, order=order_id)
            key = f"review:{review_id}"
            await run_on(
                session,
                award_points_on,
                self._ladder,
                member_id,
                source="review",
                source_key=key,
                amount=points,
                at=now,
            )
            await run_on(
                session,
                activity.record_on,
                member_id,
                "review",
                key,
                at=now,
                growth=self._ladder.growth.review,
            )
        if self._on_activity is not None:
            await self._on_activity(member_id)
        return ReviewView(
            id=review_id,
            order_id=order_id,
            member_id=member_id,
            rating=rating,
            text=body,
            points=points,
            created_at=now,
        )

    async def of_order(self, member_id: int, order_id: int) -> ReviewView | None:
        """The member's review of their own order, with the points it earned; None if none.

        Someone else's order reads as not reviewed, like an order that does not exist.
        """
        async with self._db.read() as session:
            review = await session.scalar(
                select(Review).where(Review.order_id == order_id, Review.member_id == member_id)
            )
            if review is None:
                return None
            earned = await session.scalar(
                select(PointLot.amount).where(PointLot.source_key == f"review:{review.id}")
            )
            return ReviewView(
                id=review.id,
                order_id=review.order_id,
                member_id=review.member_id,
                rating=review.rating,
                text=review.text,
                points=earned or 0,
                created_at=review.created_at,
            )
