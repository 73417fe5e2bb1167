"""SQLAlchemy 2 ORM over SQLite in /tmp: declarative models, a relationship, sessions,
bulk inserts and an aggregate query."""

import os

from sqlalchemy import ForeignKey, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    orders: Mapped[list["Order"]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount: Mapped[int]
    customer: Mapped[Customer] = relationship(back_populates="orders")


def handler(event, context):
    path = "/tmp/corpus-orm.db"
    if os.path.exists(path):
        os.remove(path)
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        for c in range(event["customers"]):
            customer = Customer(name=f"c{c}")
            customer.orders = [Order(amount=c * 10 + o) for o in range(c % 4 + 1)]
            session.add(customer)
    with Session(engine) as session:
        totals = session.execute(
            select(Customer.name, func.count(Order.id), func.sum(Order.amount))
            .join(Customer.orders).group_by(Customer.id).order_by(Customer.id).limit(5)).all()
        biggest = session.scalars(select(Customer).order_by(Customer.id.desc())).first()
        orders = len(biggest.orders)
    engine.dispose()
    return {"totals": [list(t) for t in totals], "last": biggest.name, "orders": orders}
