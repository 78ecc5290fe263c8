"""yiyun.hospital"""
