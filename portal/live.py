"""The portal's live WebSocket: staff browsers join the `portal.live` group (stations/live.py)."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from stations.live import GROUP


class LiveConsumer(AsyncJsonWebsocketConsumer):
    groups = []  # joined only once the user is known to be staff

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not (user.is_active and user.is_staff):
            await self.close()  # before accept: HTTP 403
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """Browsers only listen."""

    async def live_changed(self, message):
        await self.send_json({"cids": message["cids"], "presence": message["presence"]})
