"""All versioned API routes; add each domain's router here."""

from fastapi import APIRouter

api_router = APIRouter(prefix="/api/v1")
